// The explorer's only script (served as /explorer.js, no build step): switches the strategy whose
// walk is drawn, links a frame to its stack words and back, and sends "mark known" with the
// admin token the reader types (kept in this tab's sessionStorage at most, never in a cookie).
'use strict';
(function () {
  const main = document.getElementById('main');
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // --- strategy switch: the radio group; the choice goes into the URL so a pasted link keeps it
  for (const r of $$('fieldset.switch input[name=strategy]')) {
    r.addEventListener('change', () => {
      if (!main || !r.checked) return;
      main.dataset.strategy = r.value;
      clearHighlight();
      const u = new URL(location.href);
      u.searchParams.set('strategy', r.value);
      history.replaceState(null, '', u);
    });
  }

  // --- frame <-> words
  let pinned = null;
  function clearHighlight() {
    for (const e of $$('.hl')) e.classList.remove('hl');
  }
  function lightFrame(li) {
    li.classList.add('hl');
    for (const a of (li.dataset.words || '').split(' ')) {
      const w = a && document.getElementById('w-' + a);
      if (w) w.classList.add('hl');
    }
  }
  function show(li) {
    clearHighlight();
    if (pinned && pinned !== li) lightFrame(pinned);
    lightFrame(li);
  }
  function hide() {
    clearHighlight();
    if (pinned) lightFrame(pinned);
  }
  for (const li of $$('li.frame')) {
    li.addEventListener('mouseenter', () => show(li));
    li.addEventListener('focus', () => show(li));
    li.addEventListener('mouseleave', hide);
    li.addEventListener('blur', hide);
    const pin = () => {
      pinned = pinned === li ? null : li;
      show(li);
      const first = (li.dataset.words || '').split(' ')[0];
      const w = first && document.getElementById('w-' + first);
      if (w && pinned) w.scrollIntoView({ block: 'nearest' });
    };
    li.addEventListener('click', pin);
    li.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); pin(); } });
  }
  for (const w of $$('.w[data-addr]')) {
    w.addEventListener('mouseenter', () => {
      if (!main) return;
      const panel = main.querySelector('.panel.for-' + main.dataset.strategy);
      if (!panel) return;
      for (const li of $$('li.frame', panel)) {
        if ((' ' + li.dataset.words + ' ').includes(' ' + w.dataset.addr + ' ')) li.classList.add('hl');
      }
    });
    w.addEventListener('mouseleave', hide);
  }

  // --- mark a finding known (needs an admin token: PUT /v1/findings/{id})
  for (const f of $$('form.markknown')) {
    f.addEventListener('submit', async (e) => {
      e.preventDefault();
      const out = f.querySelector('output');
      const tokenInput = document.getElementById('admin-token');
      const token = tokenInput && tokenInput.value.trim();
      if (!token) {
        out.textContent = 'enter an admin token above first';
        if (tokenInput) tokenInput.focus();
        return;
      }
      if (document.getElementById('remember-token') && document.getElementById('remember-token').checked) sessionStorage.setItem('stacksanity-admin-token', token);
      const state = f.dataset.state || 'known';
      const note = (f.querySelector('input[name=note]') || {}).value || '';
      out.textContent = 'saving…';
      try {
        const r = await fetch('/v1/findings/' + encodeURIComponent(f.dataset.id), {
          method: 'PUT',
          headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token },
          body: JSON.stringify(note ? { state, note } : { state }),
        });
        const body = await r.json().catch(() => ({}));
        out.textContent = r.ok ? 'saved: ' + body.state : (body.message || ('failed: HTTP ' + r.status));
        if (r.ok) setTimeout(() => location.reload(), 400);
      } catch (err) {
        out.textContent = 'failed: ' + err;
      }
    });
  }
  const saved = sessionStorage.getItem('stacksanity-admin-token');
  const ti = document.getElementById('admin-token');
  if (saved && ti) ti.value = saved;
})();
