// Live updates for the task page. The page works without this file: it
// only follows the task over server-sent events, appends new steps and
// audit rows, and warns (and disables the forms) when the plan or the
// phase changes under the reader. Data is only ever set as textContent.
(function () {
  'use strict';
  var main = document.getElementById('task');
  if (!main || !window.EventSource || main.dataset.final === 'true') { return; }
  var id = main.dataset.taskId;
  var plan = main.dataset.planHash;
  var phase = main.dataset.phase;
  var skipAudit = parseInt(main.dataset.events, 10);
  var banner = document.getElementById('live-banner');

  function warn(msg) {
    if (!banner) { return; }
    banner.textContent = msg;
    banner.hidden = false;
  }
  function disableForms() {
    var bs = document.querySelectorAll('form.decision button[type=submit]');
    for (var i = 0; i < bs.length; i++) { bs[i].disabled = true; }
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function renderSteps(steps) {
    var box = document.getElementById('steps');
    if (!box || !steps) { return; }
    var last = 0;
    var shown = box.querySelectorAll('details.step');
    for (var j = 0; j < shown.length; j++) { last = Math.max(last, parseInt(shown[j].dataset.n, 10) || 0); }
    for (var i = 0; i < steps.length; i++) {
      var s = steps[i];
      if (s.n <= last) { continue; }
      var d = el('details', 'step');
      d.dataset.n = String(s.n);
      var sum = el('summary');
      sum.appendChild(el('span', 'mono', s.n + '. ' + s.tool + ' ' + s.args));
      sum.appendChild(document.createTextNode(' \u2192 exit ' + s.exit_code + ' \u00b7 ' + s.duration_ms + ' ms'));
      if (s.error) { sum.appendChild(el('span', 'error', ' ' + s.error)); }
      d.appendChild(sum);
      d.appendChild(el('pre', 'out', s.output || ''));
      box.appendChild(d);
    }
    var none = document.getElementById('no-steps');
    if (none && steps.length) { none.remove(); }
  }

  var es = new EventSource('/api/v1/tasks/' + encodeURIComponent(id) + '/events');
  es.addEventListener('status', function (ev) {
    var s = JSON.parse(ev.data);
    var ph = document.getElementById('phase');
    if (ph) { ph.textContent = s.phase; ph.className = 'phase phase-' + s.phase; }
    renderSteps(s.steps);
    if (plan && s.plan_hash && s.plan_hash !== plan) {
      warn('The plan changed since this page was loaded (now ' + s.plan_hash.slice(0, 19) + '\u2026). Reload and review the new plan before deciding.');
      disableForms();
    } else if (s.phase !== phase) {
      warn('The task moved on to \u201c' + s.phase + '\u201d. Reload to see the details.');
      if (phase === 'awaiting_approval') { disableForms(); }
    }
  });
  es.addEventListener('audit', function (ev) {
    if (skipAudit < 0) { return; }
    if (skipAudit > 0) { skipAudit--; return; }
    var e = JSON.parse(ev.data);
    var rows = document.getElementById('audit-rows');
    if (!rows) { return; }
    var tr = el('tr');
    tr.appendChild(el('td', 'nowrap', e.at));
    tr.appendChild(el('td', '', e.kind));
    tr.appendChild(el('td', '', e.actor || ''));
    tr.appendChild(el('td', 'mono wrap', e.text || ''));
    rows.appendChild(tr);
  });
  es.addEventListener('end', function () { es.close(); });
})();
