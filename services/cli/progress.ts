// A one-line progress indicator on stderr, only on a terminal and only for large inputs.
export class Progress {
  private last = 0;
  private readonly enabled: boolean;
  constructor(private readonly total: number, private readonly label: string, stream = process.stderr) {
    this.enabled = stream.isTTY === true && total >= 2000;
    this.stream = stream;
  }
  private readonly stream: NodeJS.WriteStream;

  tick(done: number): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.last < 100 && done < this.total) return;
    this.last = now;
    const pct = Math.floor((done / this.total) * 100);
    const width = 30;
    const fill = Math.round((done / this.total) * width);
    this.stream.write(`\r${this.label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${pct}% ${done}/${this.total}`);
  }

  finish(): void {
    if (this.enabled) this.stream.write('\r\x1b[K');
  }
}
