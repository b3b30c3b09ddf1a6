"""The views' hover and focus popups, and the arrow keys that step through tokens.

The views put each number a mark stands for in its `title` (attn/views/): the exact weight
of a highlighted token, a heatmap cell, an ablation column, a difference cell. A browser's
own title tooltip shows on hover only, cannot be kept open or dismissed, and never shows
to a keyboard. This script, in the page's <head>, turns every such title inside the views
into a popup that WCAG 2.2's 1.4.13 accepts:

- it shows on hover and on keyboard focus;
- it is hoverable: the pointer can move onto it without it closing;
- it is dismissible: Esc closes it without moving the pointer or the focus;
- it is persistent: it stays until the pointer or the focus leaves, or Esc.

A box marked `attn-roving` (the highlighted tokens, the ablation columns, the difference
strip) is one stop of the tab order: its arrow keys (and Home, End) move the focus from mark
to mark, each showing its popup. The events are delegated to the document, so views
redrawn after a slider moves need nothing rewired. Without the script the titles still
work as plain tooltips.
"""

POPUP_JS = r"""
<script>
(() => {
  if (window.attnPopups) return;
  window.attnPopups = true;
  const MARK = '[title], [data-tip]';
  let popup = null, shownFor = null, hideTimer = null;

  const inViews = el => el && el.closest('[class^="attn-"], [class*=" attn-"]');
  function markOf(node) {
    const el = node && node.closest ? node.closest(MARK) : null;
    return el && inViews(el) && !el.closest('#attn-popup') ? el : null;
  }
  function tipOf(el) {
    if (el.hasAttribute('title')) {  // the browser's tooltip would show as well
      el.dataset.tip = el.getAttribute('title');
      el.removeAttribute('title');
    }
    return el.dataset.tip || '';
  }
  function box() {
    if (!popup) {
      popup = document.createElement('div');
      popup.id = 'attn-popup';
      popup.setAttribute('role', 'tooltip');
      popup.hidden = true;
      popup.addEventListener('mouseenter', () => clearTimeout(hideTimer));
      popup.addEventListener('mouseleave', () => hideSoon());
      document.body.appendChild(popup);
    }
    return popup;
  }
  function show(el) {
    const text = tipOf(el);
    if (!text) return;
    clearTimeout(hideTimer);
    const p = box();
    p.textContent = text;
    p.hidden = false;
    if (shownFor && shownFor !== el) shownFor.removeAttribute('aria-describedby');
    shownFor = el;
    el.setAttribute('aria-describedby', 'attn-popup');
    place();
  }
  function place() {  // beside its mark, inside the window
    if (!shownFor || !shownFor.isConnected) return hide();
    const p = box(), r = shownFor.getBoundingClientRect(), w = p.offsetWidth, h = p.offsetHeight;
    const left = Math.max(4, Math.min(r.left + r.width / 2 - w / 2, window.innerWidth - w - 4));
    const below = r.bottom + 6 + h <= window.innerHeight;
    p.style.left = left + 'px';
    p.style.top = (below ? r.bottom + 6 : Math.max(4, r.top - h - 6)) + 'px';
  }
  function hide() {
    clearTimeout(hideTimer);
    if (popup) popup.hidden = true;
    if (shownFor) shownFor.removeAttribute('aria-describedby');
    shownFor = null;
  }
  function hideSoon() {  // time to move the pointer from the mark onto the popup
    clearTimeout(hideTimer);
    hideTimer = setTimeout(hide, 300);
  }

  document.addEventListener('mouseover', e => { const el = markOf(e.target); if (el) show(el); });
  document.addEventListener('mouseout', e => {
    const el = markOf(e.target);
    if (el && el === shownFor && !el.contains(e.relatedTarget)) hideSoon();
  });
  document.addEventListener('focusin', e => { const el = markOf(e.target); if (el) show(el); else hide(); });
  document.addEventListener('focusout', e => { if (markOf(e.target) === shownFor) hideSoon(); });
  window.addEventListener('scroll', () => { if (shownFor) place(); }, true);
  window.addEventListener('resize', () => { if (shownFor) place(); });

  const STEP = {ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1};
  document.addEventListener('keydown', e => {
    if (e.key === 'Escape' && popup && !popup.hidden) {
      hide();
      e.stopPropagation();
      return;
    }
    const group = e.target.closest && e.target.closest('.attn-roving');
    if (!group || !(e.key in STEP || e.key === 'Home' || e.key === 'End')) return;
    const marks = Array.from(group.querySelectorAll(MARK));
    if (!marks.length) return;
    const at = marks.indexOf(e.target.closest(MARK));
    let next = e.key === 'Home' ? 0 : e.key === 'End' ? marks.length - 1
             : at < 0 ? (STEP[e.key] > 0 ? 0 : marks.length - 1) : at + STEP[e.key];
    next = Math.max(0, Math.min(marks.length - 1, next));
    e.preventDefault();
    marks[next].tabIndex = -1;  // focusable by script, not a stop of its own in the tab order
    marks[next].focus();
  });
})();
</script>
"""

POPUP_CSS = """
#attn-popup { position: fixed; z-index: 1000; max-width: min(360px, 90vw); padding: 6px 9px; border-radius: 4px;
              background: #1a1a1a; color: #ffffff; font: 13px/1.4 ui-sans-serif, system-ui, sans-serif;
              white-space: pre-wrap; box-shadow: 0 2px 8px rgba(0, 0, 0, 0.3); }
#attn-popup[hidden] { display: none; }
"""
