// The kubiya-cp dashboard's one script. Forms and buttons marked `data-api` call /api/v1 with the
// session cookie (plus the X-Kcp-Ui header the server asks of cookie sessions); regions marked
// `data-refresh` are re-read from the page; `#conversation` draws a run from its event stream.
// Everything received is written with textContent, never parsed as HTML.
'use strict';

(() => {
  const UI_HEADERS = { 'X-Kcp-Ui': '1' };

  async function api(method, path, body) {
    const init = { method, headers: { ...UI_HEADERS }, credentials: 'same-origin' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    const text = await resp.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = text; }
    }
    if (resp.status === 401) {
      location.href = '/sign-in?next=' + encodeURIComponent(location.pathname + location.search);
    }
    if (!resp.ok) {
      throw (data && data.error) || { message: `${resp.status} ${resp.statusText}` };
    }
    return data;
  }

  function describe(err) {
    let msg = (err && err.message) || String(err);
    const d = err && err.details;
    if (d && Array.isArray(d.errors)) {
      msg += ' (' + d.errors.map((e) => `${e.field}: ${e.issue}`).join('; ') + ')';
    }
    return msg;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') node.className = v;
      else if (v !== undefined && v !== null) node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c !== undefined && c !== null) node.append(c);
    }
    return node;
  }

  // A failed call's message: in the element given, else in the flash box.
  function showError(target, err) {
    if (target) {
      target.textContent = describe(err);
      target.hidden = false;
    } else {
      flash(describe(err), true);
    }
  }

  function flash(message, isError) {
    const box = document.getElementById('flash');
    if (!box) return;
    box.textContent = message;
    box.classList.toggle('flash-error', !!isError);
    box.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => { box.hidden = true; }, isError ? 10000 : 4000);
  }

  // ---- forms -----------------------------------------------------------------------------

  function slot(obj, path) {
    const keys = path.split('.');
    let o = obj;
    for (const k of keys.slice(0, -1)) {
      if (typeof o[k] !== 'object' || o[k] === null) o[k] = {};
      o = o[k];
    }
    return [o, keys[keys.length - 1]];
  }

  function fieldValue(input) {
    const raw = input.value;
    if (raw === '') return input.dataset.empty === 'null' ? null : undefined;
    switch (input.dataset.type) {
      case 'int': return parseInt(raw, 10);
      case 'number': return Number(raw);
      case 'json':
        try { return JSON.parse(raw); } catch (e) {
          const label = (input.labels && input.labels[0] && input.labels[0].textContent) || input.name;
          throw { message: `${label}: not valid JSON (${e.message})` };
        }
      case 'lines': return raw.split('\n').map((s) => s.trim()).filter(Boolean);
      case 'csv': return raw.split(',').map((s) => s.trim()).filter(Boolean);
      default: return raw;
    }
  }

  // The form's fields as the JSON body: dotted names nest, checkbox groups marked
  // data-type="list" become arrays (empty ones too), empty fields are left out unless
  // data-empty="null".
  function formBody(form) {
    const body = {};
    for (const input of form.elements) {
      if (!input.name || input.disabled || input.type === 'submit' || input.type === 'button') continue;
      const [o, k] = slot(body, input.name);
      if (input.type === 'checkbox' && input.dataset.type === 'list') {
        if (!Array.isArray(o[k])) o[k] = [];
        if (input.checked) o[k].push(input.value);
      } else if (input.type === 'checkbox') {
        o[k] = input.checked;
      } else if (input.type === 'radio') {
        if (input.checked) o[k] = input.value;
      } else {
        const v = fieldValue(input);
        if (v !== undefined) o[k] = v;
      }
    }
    return body;
  }

  // What to do after a call succeeded: `reload`, `stay`, or go to a path whose {names} are
  // filled from the answer. `data-show="#id:field"` writes one field of the answer on the page.
  function after(data, source) {
    const show = source.dataset.show;
    if (show) {
      const [selector, field] = show.split(':');
      const target = document.querySelector(selector);
      if (target) {
        let shown = data && field ? data[field] : JSON.stringify(data, null, 2);
        // A compile check's errors, one per line.
        if (Array.isArray(shown)) {
          shown = shown.length
            ? shown.map((e) => (e.line ? `line ${e.line}: ` : '') + (e.message || JSON.stringify(e))).join('\n')
            : 'No errors.';
          target.classList.toggle('form-ok', shown === 'No errors.');
        }
        target.textContent = shown;
        target.hidden = false;
        const box = target.closest('[hidden]');
        if (box) box.hidden = false;
      }
    }
    const then = source.dataset.then || 'reload';
    if (then === 'stay') return;
    if (then === 'reload') { location.reload(); return; }
    location.href = then.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent((data && data[k]) ?? ''));
  }

  document.addEventListener('submit', async (ev) => {
    const form = ev.target;
    if (!form.dataset || !form.dataset.api) return;
    ev.preventDefault();
    const error = form.querySelector('.form-error');
    const button = ev.submitter || form.querySelector('[type=submit]');
    if (error) error.hidden = true;
    try {
      const body = formBody(form);
      if (button) button.disabled = true;
      const data = await api(form.dataset.api, form.dataset.path, body);
      if (form.dataset.then === 'stay') form.reset();
      form.dispatchEvent(new CustomEvent('kcp:sent', { bubbles: true, detail: data }));
      flash(form.dataset.done || 'Saved.');
      after(data, form);
    } catch (e) {
      showError(error, e);
    } finally {
      if (button) button.disabled = false;
    }
  });

  document.addEventListener('click', async (ev) => {
    const button = ev.target.closest && ev.target.closest('button[data-api]');
    if (!button) return;
    ev.preventDefault();
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    let body;
    if (button.dataset.body) body = JSON.parse(button.dataset.body);
    if (button.dataset.bodyFrom) {
      const form = document.querySelector(button.dataset.bodyFrom);
      if (form) body = formBody(form);
      if (body && button.dataset.pick) {
        const keep = button.dataset.pick.split(',');
        body = Object.fromEntries(Object.entries(body).filter(([k]) => keep.includes(k)));
      }
    }
    button.disabled = true;
    try {
      const data = await api(button.dataset.api, button.dataset.path, body);
      flash(button.dataset.done || 'Done.');
      after(data, button);
    } catch (e) {
      showError(button.dataset.errorIn && document.querySelector(button.dataset.errorIn), e);
    } finally {
      button.disabled = false;
    }
  });

  // ---- live regions ----------------------------------------------------------------------

  // Reads this page again and swaps in the fresh copies of the regions with these ids; the
  // fresh regions, or null when the page could not be read.
  async function reread(ids) {
    const resp = await fetch(location.href, { headers: UI_HEADERS, credentials: 'same-origin' });
    if (!resp.ok) return null;
    const doc = new DOMParser().parseFromString(await resp.text(), 'text/html');
    return ids.map((id) => {
      const fresh = doc.getElementById(id);
      const region = document.getElementById(id);
      if (fresh && region) region.replaceChildren(...Array.from(fresh.childNodes));
      return fresh;
    });
  }

  // Re-reads the region every `data-refresh` ms while the page is visible; stops once the
  // fresh region is no longer marked live.
  function refresh(region) {
    const every = Number(region.dataset.refresh) || 5000;
    const tick = async () => {
      // Not while someone types in the region (an approval's comment).
      const typing = region.contains(document.activeElement) && /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
      if (!document.hidden && !typing) {
        try {
          const fresh = await reread([region.id]);
          if (fresh && fresh[0] && !fresh[0].dataset.refresh) return;
        } catch { /* the next tick tries again */ }
      }
      setTimeout(tick, every);
    };
    setTimeout(tick, every);
  }

  // ---- a run as a conversation -----------------------------------------------------------

  const EVENT_TYPES = [
    'status', 'run_started', 'message', 'message_chunk', 'member_message', 'member_message_chunk',
    'thinking', 'tool_started', 'tool_completed', 'policy_decision', 'diagram', 'file_generated',
    'mcp_server_unavailable', 'error', 'done',
  ];

  function text(v) {
    if (v === undefined || v === null) return '';
    return typeof v === 'string' ? v : JSON.stringify(v, null, 2);
  }

  function conversation(root) {
    const pending = [];
    let scheduled = false;
    let bubble = null;       // the assistant message receiving chunks
    let thinking = null;     // the open thinking block
    const tools = new Map(); // call_id -> its <details>
    let answered = false;

    const nearBottom = () => window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;

    function speaker(role, who) {
      return el('div', { class: `msg msg-${role}` }, el('div', { class: 'msg-who' }, who || role));
    }

    function assistantBubble(member) {
      if (!bubble || bubble.dataset.member !== (member || '')) {
        bubble = speaker('assistant', member ? `${member} (member)` : 'assistant');
        bubble.dataset.member = member || '';
        bubble.append(el('div', { class: 'msg-text' }));
        root.append(bubble);
      }
      return bubble.querySelector('.msg-text');
    }

    function setStatus(status) {
      const badge = document.querySelector('#run-status .status');
      if (badge) {
        badge.textContent = status;
        badge.className = `status status-${status}`;
      }
    }

    function note(cls, content) {
      bubble = null;
      thinking = null;
      root.append(el('div', { class: `note ${cls}` }, content));
    }

    function apply(type, data) {
      const member = data && (data.member_name || data.member);
      switch (type) {
        case 'status':
          setStatus(data.status);
          if (data.status !== 'queued' || data.attempt > 1) {
            note('note-status', `${data.status}${data.attempt > 1 ? ` (attempt ${data.attempt})` : ''}`);
          }
          break;
        case 'message':
        case 'member_message':
          thinking = null;
          if (data.role === 'user') {
            bubble = null;
            const said = speaker('user', 'you');
            said.append(el('div', { class: 'msg-text' }, text(data.content)));
            root.append(said);
          } else {
            assistantBubble(member).textContent = text(data.content);
            answered = true;
            bubble = null;
          }
          break;
        case 'message_chunk':
        case 'member_message_chunk':
          thinking = null;
          assistantBubble(member).append(text(data.content));
          break;
        case 'thinking':
          if (!thinking) {
            bubble = null;
            thinking = el('pre', { class: 'thinking-text' });
            root.append(el('details', { class: 'thinking' }, el('summary', {}, 'thinking'), thinking));
          }
          thinking.append(text(data.content));
          break;
        case 'tool_started': {
          bubble = null;
          thinking = null;
          const state = el('span', { class: 'tool-state' }, 'running');
          const out = el('pre', { class: 'tool-output', hidden: '' });
          const block = el('details', { class: 'tool', 'data-call': data.call_id || '' },
            el('summary', {}, el('span', { class: 'tool-name' }, text(data.tool_name)), ' ', state),
            el('div', { class: 'tool-label' }, 'input'), el('pre', { class: 'tool-input' }, text(data.tool_input)),
            el('div', { class: 'tool-label', hidden: '' }, 'output'), out);
          tools.set(data.call_id || text(data.tool_name), block);
          root.append(block);
          break;
        }
        case 'tool_completed': {
          let block = tools.get(data.call_id || text(data.tool_name));
          if (!block) {
            apply('tool_started', data);
            block = tools.get(data.call_id || text(data.tool_name));
          }
          const state = block.querySelector('.tool-state');
          state.textContent = data.is_error ? 'failed' : 'done';
          state.classList.add(data.is_error ? 'tool-failed' : 'tool-done');
          const out = block.querySelector('.tool-output');
          out.textContent = text(data.tool_output);
          out.hidden = false;
          out.previousElementSibling.hidden = false;
          break;
        }
        case 'diagram':
          bubble = null;
          root.append(diagram(data));
          break;
        case 'file_generated':
          note('note-file', 'files: ' + (data.files || []).map((f) => f.path || f.name || text(f)).join(', '));
          break;
        case 'policy_decision':
          note(data.allowed ? 'note-policy' : 'note-denied',
            `policy ${data.allowed ? 'allowed' : 'denied'} ${text(data.tool_name || data.action)}` +
            (data.violations && data.violations.length ? `: ${data.violations.join('; ')}` : ''));
          break;
        case 'mcp_server_unavailable':
          note('note-error', `MCP server unavailable: ${text(data.server || data.name)} ${text(data.error || data.reason)}`);
          break;
        case 'error':
          note('note-error', text(data.message || data));
          break;
        case 'done':
          setStatus(data.status);
          if (!answered && data.response) {
            assistantBubble(null).textContent = text(data.response);
          }
          if (data.error_message) note('note-error', text(data.error_message));
          answered = false;
          usage(data.usage);
          // The run's facts (its end, duration, cost; no cancel button) as stored now.
          reread(['run-facts']).catch(() => {});
          break;
        default:
          break;
      }
    }

    function usage(u) {
      if (!u) return;
      const set = (id, v) => { const node = document.getElementById(id); if (node && v !== undefined) node.textContent = v; };
      set('usage-prompt', u.prompt_tokens);
      set('usage-completion', u.completion_tokens);
      if (typeof u.cost_usd === 'number') set('usage-cost', '$' + (u.cost_usd < 0.01 && u.cost_usd > 0 ? u.cost_usd.toFixed(4) : u.cost_usd.toFixed(2)));
    }

    // Events are drawn once per frame, however fast they come.
    function flush() {
      scheduled = false;
      const follow = nearBottom();
      for (const [type, data] of pending.splice(0)) {
        try { apply(type, data); } catch (e) { console.error('event', type, e); }
      }
      if (follow) window.scrollTo(0, document.body.scrollHeight);
    }

    // The stream ends after `done`; a message sent from this page continues the run, and the
    // stream is opened again after the last event drawn.
    let source = null;
    let last = 0;
    let backoff = 0;
    function open() {
      const url = root.dataset.stream + (last ? `?after=${last}` : '');
      source = new EventSource(url);
      for (const type of EVENT_TYPES) {
        source.addEventListener(type, (ev) => {
          let data = null;
          try { data = JSON.parse(ev.data); } catch { data = ev.data; }
          last = Number(ev.lastEventId) || last;
          backoff = 0;
          pending.push([type, data || {}]);
          if (type === 'done') {
            source.close();
            source = null;
            root.dataset.done = 'true';
          }
          if (!scheduled) {
            scheduled = true;
            requestAnimationFrame(flush);
          }
        });
      }
      // A dropped connection is resumed by the browser itself; one it gave up on (an error
      // answer, such as too many streams for this key) is opened again, less and less often.
      source.addEventListener('error', () => {
        if (!source || source.readyState !== EventSource.CLOSED) return;
        source = null;
        backoff = Math.min(backoff ? backoff * 2 : 1000, 30000);
        note('note-error', `The stream was cut; trying again in ${backoff / 1000} s.`);
        setTimeout(() => { if (!source && !root.dataset.done) open(); }, backoff);
      });
    }
    open();
    document.addEventListener('kcp:sent', () => {
      if (!source) {
        delete root.dataset.done;
        open();
      }
    });
  }

  // A `diagram` event: the server draws flowcharts, sequences and pies as SVG; other kinds show their source.
  function diagram(data) {
    const figure = el('figure', { class: 'diagram' },
      el('figcaption', {}, text(data.title || `${data.diagram_type || ''} diagram`)));
    const source = el('pre', { class: 'diagram-source' }, text(data.source));
    figure.append(source);
    api('POST', '/ui/diagram', { source: data.source })
      .then((svg) => {
        if (typeof svg === 'object' && svg && svg.svg) {
          const doc = new DOMParser().parseFromString(svg.svg, 'image/svg+xml');
          const node = doc.documentElement;
          if (node && node.nodeName === 'svg') {
            figure.insertBefore(document.importNode(node, true), source);
            source.hidden = true;
          }
        }
      })
      .catch(() => { /* the source stays */ });
    return figure;
  }

  function start() {
    document.querySelectorAll('[data-refresh][id]').forEach(refresh);
    const conv = document.getElementById('conversation');
    if (conv && conv.dataset.stream) conversation(conv);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
