// A canvas scatter plot with zoom (wheel, +/-) and pan (drag, arrow keys), hover tips and click picking.
//
// Coordinates: the database's map x/y are fitted into a unit square (aspect kept, y up), the unit square into
// the largest centred square of the canvas (`base`), and the view transform maps that to the screen:
// screen = base * k + t. Zooming by f around the point m keeps m fixed: t' = m - (m - t) * f.

import { domainColor, rgba } from "./domains.js";

const PAD = 24;
const BG = "#070b14";
const ACCENT = "#ffd43b";

export class StarMap {
  constructor(canvas, tip, { onPick = () => {}, describe = (p) => p.id } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.tip = tip;
    this.onPick = onPick;
    this.describe = describe;
    this.points = [];
    this.k = 1;
    this.tx = 0;
    this.ty = 0;
    this.highlight = new Set();
    this.active = new Set();
    this.hidden = new Set(); // hidden domains ("" = no domain)
    this.selected = null;
    this.hover = null;
    this.drawn = 0;
    this.width = 0;
    this.height = 0;
    this._frame = 0;
    this._bind();
    new ResizeObserver(() => this.resize()).observe(canvas.parentElement);
  }

  /** `entries`: [{id, x, y, domain, ...}] with numeric x/y. */
  setPoints(entries) {
    const xs = entries.map((e) => e.x);
    const ys = entries.map((e) => e.y);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    const span = Math.max(x1 - x0, y1 - y0) || 1;
    const cx = (x0 + x1) / 2;
    const cy = (y0 + y1) / 2;
    this.points = entries.map((e) => ({
      id: e.id, domain: e.domain || "", entry: e, color: domainColor(e.domain),
      wx: 0.5 + (e.x - cx) / span, wy: 0.5 + (e.y - cy) / span,
    }));
    this.byId = new Map(this.points.map((p) => [p.id, p]));
    this.request();
  }

  setHighlight(ids) { this.highlight = new Set(ids); this.request(); }
  setActive(ids) { this.active = new Set(ids); this.request(); }
  setHidden(domains) { this.hidden = new Set(domains); this.request(); }
  select(id) { this.selected = id; this.request(); }

  resetView() { this.k = 1; this.tx = 0; this.ty = 0; this.request(); }

  /** Zoom so the point `id` sits in the middle of the canvas. */
  centerOn(id, minZoom = 2.5) {
    const p = this.byId?.get(id);
    if (!p) return false;
    this.k = Math.max(this.k, minZoom);
    const [bx, by] = this._base(p);
    this.tx = this.width / 2 - bx * this.k;
    this.ty = this.height / 2 - by * this.k;
    this.request();
    return true;
  }

  /** Canvas (CSS px) position of a point, or null. */
  toScreen(id) {
    const p = this.byId?.get(id);
    if (!p) return null;
    const [bx, by] = this._base(p);
    return { x: bx * this.k + this.tx, y: by * this.k + this.ty };
  }

  resize() {
    const r = this.canvas.getBoundingClientRect();
    if (r.width < 2 || r.height < 2) return; // hidden tab
    const dpr = window.devicePixelRatio || 1;
    this.width = r.width;
    this.height = r.height;
    this.canvas.width = Math.round(r.width * dpr);
    this.canvas.height = Math.round(r.height * dpr);
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.draw();
  }

  request() {
    if (this._frame) return;
    this._frame = requestAnimationFrame(() => { this._frame = 0; this.draw(); });
  }

  _base(p) {
    const s = Math.max(10, Math.min(this.width, this.height) - 2 * PAD);
    const ox = (this.width - s) / 2;
    const oy = (this.height - s) / 2;
    return [ox + p.wx * s, oy + (1 - p.wy) * s];
  }

  _radius() {
    return Math.max(2.5, Math.min(9, 3.2 * Math.sqrt(this.k)));
  }

  draw() {
    const { ctx } = this;
    if (!this.width) return;
    ctx.fillStyle = BG;
    ctx.fillRect(0, 0, this.width, this.height);
    const r = this._radius();
    const searching = this.highlight.size > 0;
    const visible = this.points.filter((p) => !this.hidden.has(p.domain));
    // back to front: plain, active, highlighted, selected
    const rank = (p) => (p.id === this.selected ? 3 : this.highlight.has(p.id) ? 2 : this.active.has(p.id) ? 1 : 0);
    visible.sort((a, b) => rank(a) - rank(b));
    let drawn = 0;
    for (const p of visible) {
      const [bx, by] = this._base(p);
      const x = bx * this.k + this.tx;
      const y = by * this.k + this.ty;
      if (x < -20 || y < -20 || x > this.width + 20 || y > this.height + 20) continue;
      drawn++;
      const hi = this.highlight.has(p.id);
      const act = this.active.has(p.id);
      const rr = hi ? r + 2 : act ? r + 1 : r;
      ctx.beginPath();
      ctx.arc(x, y, rr, 0, Math.PI * 2);
      ctx.fillStyle = searching && !hi ? rgba(p.color, 0.28) : p.color;
      ctx.fill();
      if (hi) {
        ctx.lineWidth = 1.5;
        ctx.strokeStyle = "#ffffff";
        ctx.stroke();
      }
      if (act) {
        ctx.beginPath();
        ctx.arc(x, y, rr + 3, 0, Math.PI * 2);
        ctx.lineWidth = 1.2;
        ctx.strokeStyle = searching && !hi ? rgba(ACCENT, 0.35) : rgba(ACCENT, 0.85);
        ctx.stroke();
      }
      if (p.id === this.selected) {
        ctx.beginPath();
        ctx.arc(x, y, rr + 7, 0, Math.PI * 2);
        ctx.lineWidth = 2;
        ctx.strokeStyle = "#ffffff";
        ctx.setLineDash([3, 3]);
        ctx.stroke();
        ctx.setLineDash([]);
      }
    }
    this.drawn = drawn;
    this.canvas.dataset.drawn = String(drawn);
  }

  /** The visible point nearest to canvas position (x, y) within `maxDist` px, or null. */
  nearest(x, y, maxDist = 10) {
    let best = null;
    let bestD = maxDist * maxDist;
    for (const p of this.points) {
      if (this.hidden.has(p.domain)) continue;
      const [bx, by] = this._base(p);
      const dx = bx * this.k + this.tx - x;
      const dy = by * this.k + this.ty - y;
      const d = dx * dx + dy * dy;
      if (d <= bestD) { best = p; bestD = d; }
    }
    return best;
  }

  zoomAt(mx, my, f) {
    const k = Math.min(80, Math.max(0.5, this.k * f));
    f = k / this.k;
    this.tx = mx - (mx - this.tx) * f;
    this.ty = my - (my - this.ty) * f;
    this.k = k;
    this.request();
  }

  _showTip(p, x, y) {
    if (!p) { this.tip.hidden = true; return; }
    this.tip.replaceChildren(...this.describe(p.entry));
    this.tip.hidden = false;
    const w = this.tip.offsetWidth;
    const h = this.tip.offsetHeight;
    this.tip.style.left = `${Math.min(this.width - w - 4, x + 12)}px`;
    this.tip.style.top = `${y + 14 + h > this.height ? y - h - 10 : y + 14}px`;
  }

  _bind() {
    const c = this.canvas;
    let drag = null;
    const local = (ev) => {
      const r = c.getBoundingClientRect();
      return [ev.clientX - r.left, ev.clientY - r.top];
    };
    c.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const [x, y] = local(ev);
      this.zoomAt(x, y, Math.exp(-ev.deltaY * 0.0015));
    }, { passive: false });
    c.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0) return;
      const [x, y] = local(ev);
      drag = { x, y, moved: 0, id: ev.pointerId };
      c.setPointerCapture(ev.pointerId);
    });
    c.addEventListener("pointermove", (ev) => {
      const [x, y] = local(ev);
      if (drag) {
        const dx = x - drag.x;
        const dy = y - drag.y;
        drag.moved += Math.abs(dx) + Math.abs(dy);
        drag.x = x;
        drag.y = y;
        if (drag.moved > 3) {
          c.classList.add("dragging");
          this.tx += dx;
          this.ty += dy;
          this.tip.hidden = true;
          this.request();
          return;
        }
      }
      const p = this.nearest(x, y);
      this.hover = p ? p.id : null;
      c.style.cursor = p ? "pointer" : "";
      this._showTip(p, x, y);
    });
    const end = (ev) => {
      if (!drag) return;
      const wasClick = drag.moved <= 3;
      c.classList.remove("dragging");
      try { c.releasePointerCapture(drag.id); } catch { /* already released */ }
      drag = null;
      if (wasClick && ev.type === "pointerup") {
        const [x, y] = local(ev);
        const p = this.nearest(x, y);
        if (p) {
          this.select(p.id);
          this.onPick(p.id);
        }
      }
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("pointerleave", () => { this.tip.hidden = true; });
    c.addEventListener("keydown", (ev) => {
      const step = 40;
      const handled = {
        "+": () => this.zoomAt(this.width / 2, this.height / 2, 1.25),
        "=": () => this.zoomAt(this.width / 2, this.height / 2, 1.25),
        "-": () => this.zoomAt(this.width / 2, this.height / 2, 0.8),
        "0": () => this.resetView(),
        ArrowLeft: () => { this.tx += step; this.request(); },
        ArrowRight: () => { this.tx -= step; this.request(); },
        ArrowUp: () => { this.ty += step; this.request(); },
        ArrowDown: () => { this.ty -= step; this.request(); },
      }[ev.key];
      if (handled) { handled(); ev.preventDefault(); }
    });
  }
}
