// The culprit dashboard's only script. It keeps the token in session storage, routes on the
// URL's hash, fetches server-rendered fragments with the token, writes feedback and baseline
// recalculations through the JSON API, and refreshes the incident list on live events.
'use strict';
(function () {
  const KEY = 'culprit.token';
  const $ = (id) => document.getElementById(id);
  const view = () => $('view');
  let token = sessionStorage.getItem(KEY);
  let stream = null; // AbortController of the live event stream
  let refreshTimer = null;
  let renderSeq = 0; // a response for a view already left is dropped
  let listSeq = 0;

  class Unauthorized extends Error {}

  function say(message) {
    $('status').textContent = message;
  }

  async function call(path, options) {
    const opts = Object.assign({}, options);
    opts.headers = Object.assign({}, opts.headers, { Authorization: 'Bearer ' + token });
    const res = await fetch(path, opts);
    if (res.status === 401) {
      signOut('That token was not accepted. Sign in again.');
      throw new Unauthorized('unauthorized');
    }
    return res;
  }

  function showWho(who) {
    $('who').textContent = 'Signed in as ' + who.name + ' (' + who.scope + ')';
    $('signout').hidden = false;
  }

  function showSignin(message) {
    view().innerHTML = '';
    $('who').textContent = '';
    $('signout').hidden = true;
    $('signin').hidden = false;
    $('signin-error').textContent = message || '';
    $('token').focus();
  }

  function signOut(message) {
    stopStream();
    token = null;
    sessionStorage.removeItem(KEY);
    showSignin(message);
  }

  function route() {
    const hash = location.hash.startsWith('#/') ? location.hash.slice(1) : '/incidents';
    const q = hash.indexOf('?');
    const path = q < 0 ? hash : hash.slice(0, q);
    const query = q < 0 ? '' : hash.slice(q + 1);
    return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), query };
  }

  function markNav(name) {
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.dataset.nav === name) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
  }

  function focusOn(id) {
    const el = (id && $(id)) || view().querySelector('h1');
    if (!el) return;
    if (!el.hasAttribute('tabindex')) el.setAttribute('tabindex', '-1');
    el.focus();
  }

  // Renders the view the hash names; `focusId` is where focus goes afterwards.
  async function render(focusId) {
    stopStream();
    say(''); // a message belongs to the view it was said on
    if (!token) {
      showSignin();
      return;
    }
    $('signin').hidden = true;
    const { parts, query } = route();
    const seq = ++renderSeq;
    const enc = encodeURIComponent;
    let url, after, nav;
    if (parts.length <= 1 && (parts[0] || 'incidents') === 'incidents') {
      url = '/ui/incidents' + (query ? '?' + query : '');
      after = bindList;
      nav = 'incidents';
    } else if (parts[0] === 'incidents' && parts.length === 2) {
      url = '/ui/incidents/' + enc(parts[1]);
      after = bindIncident;
      nav = 'incidents';
    } else if (parts[0] === 'baselines' && parts.length === 1) {
      url = '/ui/baselines';
      nav = 'baselines';
    } else if (parts[0] === 'baselines' && parts.length === 2) {
      url = '/ui/baselines/' + enc(parts[1]);
      after = bindBaselines;
      nav = 'baselines';
    } else if (parts[0] === 'history' && parts.length === 1) {
      url = '/ui/history';
      nav = 'history';
    } else {
      view().innerHTML = '<p class="problem">There is no such page. <a href="#/incidents">See the incidents.</a></p>';
      return;
    }
    markNav(nav);
    let res, text;
    try {
      res = await call(url);
      text = await res.text();
    } catch (e) {
      if (!(e instanceof Unauthorized)) say('Cannot reach culprit: ' + e.message);
      return;
    }
    if (seq !== renderSeq) return;
    if ((res.headers.get('content-type') || '').startsWith('application/json')) {
      // A refusal from the API itself (403) rather than a fragment.
      const p = document.createElement('p');
      p.className = 'problem';
      p.textContent = (JSON.parse(text).error || 'HTTP ' + res.status);
      view().replaceChildren(p);
      return;
    }
    view().innerHTML = text;
    if (after) after();
    focusOn(focusId);
  }

  // ---- incident list ----

  function listQuery() {
    const params = new URLSearchParams();
    for (const el of $('filters').elements) {
      if (el.name && el.value) params.set(el.name, el.value);
    }
    return params.toString();
  }

  function bindList() {
    if (performance.getEntriesByName('culprit:incidents-rendered').length === 0) {
      performance.mark('culprit:incidents-rendered');
    }
    const form = $('filters');
    form.addEventListener('change', () => {
      const q = listQuery();
      history.replaceState(null, '', '#/incidents' + (q ? '?' + q : ''));
      refreshList();
    });
    $('clear-filters').addEventListener('click', () => {
      for (const el of form.elements) if (el.tagName === 'SELECT') el.value = '';
      form.dispatchEvent(new Event('change'));
    });
    startStream();
  }

  async function refreshList() {
    const seq = renderSeq;
    const mine = ++listSeq;
    const q = listQuery();
    let res, html;
    try {
      res = await call('/ui/incident-rows' + (q ? '?' + q : ''));
      html = await res.text();
    } catch (e) {
      return;
    }
    if (!res.ok || seq !== renderSeq || mine !== listSeq || !$('results')) return;
    $('results').innerHTML = html;
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refreshList, 200);
  }

  // Server-sent events read through fetch, since EventSource cannot send the token.
  function startStream() {
    const ctl = new AbortController();
    stream = ctl;
    const live = (state) => {
      const el = $('live');
      if (el) el.textContent = 'Live updates: ' + state;
    };
    (async () => {
      while (stream === ctl) {
        try {
          const res = await call('/events', { signal: ctl.signal, headers: { Accept: 'text/event-stream' } });
          if (!res.ok) throw new Error('HTTP ' + res.status);
          const reader = res.body.getReader();
          const decoder = new TextDecoder();
          let buffer = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += decoder.decode(value, { stream: true });
            let end;
            while ((end = buffer.indexOf('\n\n')) >= 0) {
              const block = buffer.slice(0, end);
              buffer = buffer.slice(end + 2);
              if (/^event: ready$/m.test(block)) live('on');
              if (/^event: incidents$/m.test(block)) scheduleRefresh();
            }
          }
        } catch (e) {
          if (ctl.signal.aborted || e instanceof Unauthorized) return;
        }
        if (stream !== ctl) return;
        live('reconnecting');
        await new Promise((r) => setTimeout(r, 3000));
      }
    })();
  }

  function stopStream() {
    if (stream) {
      stream.abort();
      stream = null;
    }
  }

  // ---- incident page ----

  function bindIncident() {
    const id = view().querySelector('article.incident').dataset.incident;
    const result = (m) => {
      $('fb-result').textContent = m;
    };
    for (const form of view().querySelectorAll('form.fb')) {
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        let cause;
        if (form.dataset.cause) {
          cause = form.dataset.cause;
        } else if (form.elements.cause) {
          cause = form.elements.cause.value;
        } else {
          const text = form.elements.other.value.trim();
          if (!text) {
            result('Describe the other cause first.');
            form.elements.other.focus();
            return;
          }
          cause = 'other: ' + text;
        }
        const body = { cause };
        const note = $('fb-note').value.trim();
        if (note) body.note = note;
        let res, data;
        try {
          res = await call('/incidents/' + encodeURIComponent(id) + '/feedback', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(body),
          });
          data = await res.json().catch(() => ({}));
        } catch (e) {
          if (!(e instanceof Unauthorized)) result('Feedback not sent: ' + e.message);
          return;
        }
        if (res.status === 201) {
          await render('feedback-title');
          const f = data.feedback;
          say('Feedback recorded: ' + f.cause + ', by ' + f.author + (f.provisional ? ' (provisional until the incident resolves).' : '.'));
        } else if (res.status === 403) {
          result('This token can read only: giving feedback needs a write-scoped token.');
        } else {
          result(data.error || 'Feedback not recorded (HTTP ' + res.status + ').');
        }
      });
    }
  }

  // ---- baselines ----

  function bindBaselines() {
    const form = $('recalc');
    if (!form) return;
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const out = $('recalc-result');
      const body = {};
      if (form.elements.mode.value === 'range') {
        const from = form.elements.from.value;
        const to = form.elements.to.value;
        if (!from || !to) {
          out.textContent = 'Give both ends of the range.';
          return;
        }
        // datetime-local has no zone; the labels say UTC.
        body.from = (from.length === 16 ? from + ':00' : from) + 'Z';
        body.to = (to.length === 16 ? to + ':00' : to) + 'Z';
      }
      if (form.elements.source.value) body.source = form.elements.source.value;
      let res, data;
      try {
        res = await call('/baselines/' + encodeURIComponent(form.dataset.service) + '/recalculate', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify(body),
        });
        data = await res.json().catch(() => ({}));
      } catch (e) {
        if (!(e instanceof Unauthorized)) out.textContent = 'Not sent: ' + e.message;
        return;
      }
      if (res.ok) {
        await render('recalc-result');
        const r = data.recalculation;
        // The detail says what the detectors did (for a range: what they re-read and adopted).
        say('Recalculated by ' + r.author + ': ' + (r.detail || (r.baselines + ' baselines reset.')));
      } else if (res.status === 403) {
        out.textContent = 'This token can read only: recalculating needs a write-scoped token.';
      } else {
        out.textContent = data.error || 'Not recalculated (HTTP ' + res.status + ').';
      }
    });
  }

  // ---- start ----

  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const candidate = $('token').value.trim();
    let res;
    try {
      res = await fetch('/whoami', { headers: { Authorization: 'Bearer ' + candidate } });
    } catch (e) {
      $('signin-error').textContent = 'Cannot reach culprit: ' + e.message;
      return;
    }
    if (!res.ok) {
      $('signin-error').textContent = res.status === 401 ? 'That token was not accepted.' : 'Cannot sign in (HTTP ' + res.status + ').';
      return;
    }
    token = candidate;
    sessionStorage.setItem(KEY, token);
    $('token').value = '';
    showWho(await res.json());
    render();
  });

  $('signout').addEventListener('click', () => signOut('Signed out.'));

  // In-page links (the skip link, "Give feedback") move focus instead of changing the route.
  document.addEventListener('click', (ev) => {
    const a = ev.target.closest && ev.target.closest('a[href^="#"]');
    if (!a || a.getAttribute('href').startsWith('#/')) return;
    ev.preventDefault();
    const target = $(a.getAttribute('href').slice(1));
    if (target) {
      if (!target.hasAttribute('tabindex')) target.setAttribute('tabindex', '-1');
      target.focus();
      target.scrollIntoView();
    }
  });

  window.addEventListener('hashchange', () => render());

  if (token) {
    call('/whoami')
      .then((r) => (r.ok ? r.json() : null))
      .then((who) => who && showWho(who))
      .catch(() => {});
  }
  render();
})();
