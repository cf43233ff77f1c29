/* Rewind tree viewer: draws the tree embedded in #tree-data as SVG, left to right.
 * Layout: visible leaves take consecutive rows in depth-first order, a parent sits midway
 * between its first and last visible child, depth sets the column; so subtrees never overlap.
 * All text goes through textContent (never innerHTML): node text is data, not markup. */
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const DX = 230, DY = 26, R = 7, LABEL_CHARS = 30, AUTO_COLLAPSE = 1500;
  const payload = JSON.parse(document.getElementById("tree-data").textContent);
  const tree = payload.tree, nodes = tree.nodes, n = nodes.length;
  const children = nodes.map(() => []);
  nodes.forEach((d) => { if (d.parent >= 0) children[d.parent].push(d.id); });
  const chosen = new Set(tree.chosen || []);
  const collapsed = new Set();
  const pos = new Array(n);          // [x, y] per node
  const labelEnd = new Array(n).fill(0);
  const nodeEl = new Array(n), edgeEl = new Array(n), toggleEl = new Array(n), moreEl = new Array(n);
  const view = { k: 1, tx: 20, ty: 20 };
  let selected = null;

  const $ = (id) => document.getElementById(id);
  const svgEl = (tag, attrs) => {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  };
  const short = (s) => { const t = s.replace(/\s+/g, " ").trim(); return t.length > LABEL_CHARS ? t.slice(0, LABEL_CHARS - 1) + "…" : t; };
  const num = (x, digits) => (x === null || x === undefined ? "—" : Number(x).toFixed(digits));
  const pColour = (p) => `hsl(${Math.round(130 * (1 - Math.min(Math.max(p, 0), 1)))}, 70%, 48%)`;
  const hasScore = (d) => typeof d.p_backtrack === "number";

  function preorder() {
    const out = [], stack = n ? [0] : [];
    while (stack.length) {
      const id = stack.pop();
      out.push(id);
      if (!collapsed.has(id)) for (let i = children[id].length - 1; i >= 0; i--) stack.push(children[id][i]);
    }
    return out;
  }

  function descendants(id) {
    let count = 0; const stack = children[id].slice();
    while (stack.length) { const c = stack.pop(); count++; stack.push(...children[c]); }
    return count;
  }

  // ---- drawing -------------------------------------------------------------------------
  function build() {
    const edges = $("edges"), group = $("nodes");
    for (const d of nodes) {
      if (d.parent >= 0) {
        const e = svgEl("path", { class: `edge status-${d.status}`, "data-edge-child": d.id });
        if (chosen.has(d.id) && chosen.has(d.parent)) e.classList.add("chosen");
        edges.appendChild(e); edgeEl[d.id] = e;
      }
      const g = svgEl("g", { class: `node status-${d.status}`, "data-node-id": d.id });
      if (chosen.has(d.id)) g.classList.add("chosen");
      if (!hasScore(d)) g.classList.add("no-score");
      g.appendChild(svgEl("circle", { class: "ring", r: R + 4 }));
      const dot = svgEl("circle", { class: "dot", r: R });
      if (hasScore(d)) dot.setAttribute("fill", pColour(d.p_backtrack));
      g.appendChild(dot);
      const label = svgEl("text", { class: "label", x: R + 5, y: 4 });
      label.textContent = d.id === 0 ? "question" : short(d.text) || "∅";
      g.appendChild(label);
      const title = svgEl("title", {});
      title.textContent = `#${d.id} ${d.status}  p=${num(d.p_backtrack, 3)}\n${d.text}`;
      g.appendChild(title);
      g.addEventListener("click", (ev) => { if (!view.moved) { ev.stopPropagation(); select(d.id); } });
      group.appendChild(g); nodeEl[d.id] = g;
    }
    // measure labels in one pass (reads after all writes: one layout)
    for (const d of nodes) labelEnd[d.id] = Math.min(R + 5 + nodeEl[d.id].querySelector("text.label").getComputedTextLength(), DX - 60);
    for (const d of nodes) {
      if (!children[d.id].length) continue;
      const t = svgEl("text", { class: "toggle", x: labelEnd[d.id] + 4, y: 4 });
      t.addEventListener("click", (ev) => { ev.stopPropagation(); toggle(d.id); });
      const more = svgEl("text", { class: "more", x: labelEnd[d.id] + 16, y: 4 });
      nodeEl[d.id].appendChild(t); nodeEl[d.id].appendChild(more);
      toggleEl[d.id] = t; moreEl[d.id] = more;
    }
  }

  function layout() {
    const order = preorder(), visible = new Uint8Array(n);
    let row = 0;
    for (const id of order) {
      visible[id] = 1;
      const leaf = collapsed.has(id) || !children[id].length;
      pos[id] = [nodes[id].depth * DX, leaf ? row++ * DY : 0];
    }
    for (let i = order.length - 1; i >= 0; i--) {  // children before parents
      const id = order[i], ch = children[id];
      if (ch.length && !collapsed.has(id)) pos[id][1] = (pos[ch[0]][1] + pos[ch[ch.length - 1]][1]) / 2;
    }
    for (let id = 0; id < n; id++) {
      const g = nodeEl[id];
      g.classList.toggle("hidden", !visible[id]);
      if (edgeEl[id]) edgeEl[id].classList.toggle("hidden", !visible[id]);
      if (!visible[id]) continue;
      const [x, y] = pos[id];
      g.setAttribute("transform", `translate(${x},${y})`);
      if (toggleEl[id]) {
        const c = collapsed.has(id);
        toggleEl[id].textContent = c ? "▸" : "▾";
        moreEl[id].textContent = c ? `+${descendants(id)}` : "";
      }
      const p = nodes[id].parent;
      if (p >= 0) {
        const sx = pos[p][0] + labelEnd[p] + 16, sy = pos[p][1], ex = x - R - 2, mx = (sx + ex) / 2;
        edgeEl[id].setAttribute("d", `M${sx},${sy} C${mx},${sy} ${mx},${y} ${ex},${y}`);
      }
    }
    return { rows: Math.max(row, 1), depth: order.reduce((m, id) => Math.max(m, nodes[id].depth), 0) };
  }

  // ---- interaction -----------------------------------------------------------------------
  function applyView() { $("viewport").setAttribute("transform", `translate(${view.tx},${view.ty}) scale(${view.k})`); }

  function fit() {
    const box = $("tree").getBoundingClientRect(), size = layout();
    const w = size.depth * DX + DX, h = size.rows * DY;
    const k = Math.min(Math.max(Math.min((box.width - 40) / w, (box.height - 60) / h, 1.4), 0.35), 1.4);
    view.k = k; view.tx = 20 + R;
    view.ty = h * k < box.height - 40 ? (box.height - h * k) / 2 : box.height / 2 - pos[0][1] * k;
    applyView();
  }

  function toggle(id) { if (collapsed.has(id)) collapsed.delete(id); else collapsed.add(id); layout(); }

  function collapseOffPath() {
    collapsed.clear();
    const path = tree.chosen && tree.chosen.length ? tree.chosen : [0];
    for (const id of path) for (const c of children[id]) if (!chosen.has(c) && children[c].length) collapsed.add(c);
    if (!(tree.chosen && tree.chosen.length)) for (const d of nodes) if (d.depth === 2 && children[d.id].length) collapsed.add(d.id);
    layout();
  }

  function setThreshold(tau) {
    tau = Number(tau);
    $("threshold").value = tau; $("threshold-value").textContent = tau.toFixed(2);
    let would = 0, pruned = 0;
    for (const d of nodes) {
      const w = hasScore(d) && d.p_backtrack >= tau;
      nodeEl[d.id].classList.toggle("would-prune", w);
      would += w; pruned += d.status === "pruned";
    }
    $("summary").textContent = `${n} nodes · ${pruned} pruned in run · ${would} with p ≥ ${tau.toFixed(2)}`;
    if (selected !== null) select(selected);
  }

  function addRow(table, key, value) {
    const tr = document.createElement("tr"), a = document.createElement("td"), b = document.createElement("td");
    a.textContent = key; b.textContent = value; tr.append(a, b); table.appendChild(tr);
  }

  function section(parent, title, node) {
    const h = document.createElement("h3"); h.textContent = title; parent.append(h, node);
  }

  function rawTrace(text) {
    const pre = document.createElement("pre"); pre.id = "detail-raw";
    const markers = (payload.backtrack_markers || []).map((m) => m.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const parts = markers.length ? text.split(new RegExp(`(${markers.join("|")})`)) : [text];
    parts.forEach((part, i) => {
      if (i % 2 === 1) { const s = document.createElement("span"); s.className = "bt"; s.title = part; s.textContent = "⌫"; pre.appendChild(s); }
      else if (part) pre.appendChild(document.createTextNode(part));
    });
    return pre;
  }

  function pathTo(id) { const out = []; for (let a = id; a >= 0; a = nodes[a].parent) out.push(a); return out.reverse(); }

  function select(id) {
    if (selected !== null && nodeEl[selected]) nodeEl[selected].classList.remove("selected");
    selected = id; nodeEl[id].classList.add("selected");
    const d = nodes[id], tau = Number($("threshold").value), panel = $("details");
    panel.replaceChildren();
    const h = document.createElement("h2"); h.id = "detail-title";
    h.textContent = `Node #${d.id} `;
    const badge = document.createElement("span"); badge.className = `badge status-${d.status}`; badge.id = "detail-status";
    badge.textContent = d.status; h.appendChild(badge);
    if (hasScore(d) && d.p_backtrack >= tau) {
      const w = document.createElement("span"); w.className = "badge would-prune"; w.textContent = `p ≥ τ=${tau.toFixed(2)}`;
      h.append(" ", w);
    }
    panel.appendChild(h);
    const text = document.createElement("pre"); text.id = "detail-text"; text.textContent = d.text;
    section(panel, d.id === 0 ? "prompt" : "step text (alive)", text);
    section(panel, "raw trace (⌫ = ⟨b⟩)", rawTrace(d.raw_text));
    const table = document.createElement("table"); table.id = "detail-scores";
    addRow(table, "reason", d.reason ?? "—");
    addRow(table, "answer", d.answer ?? "—");
    addRow(table, "P(backtrack)", num(d.p_backtrack, 4));
    addRow(table, "P(⟨b⟩) of the policy", num(d.p_backtrack_policy, 4));
    addRow(table, "log-prob", num(d.logprob, 4));
    addRow(table, "visits / value", `${d.visits ?? 0} / ${d.visits ? num(d.value_sum / d.visits, 4) : "—"}`);
    addRow(table, "depth · parent", `${d.depth} · ${d.parent < 0 ? "—" : "#" + d.parent}`);
    addRow(table, "tokens alive / raw", `${(d.ids || []).length} / ${(d.raw_ids || []).length}`);
    addRow(table, "⟨b⟩ runs (index×length)", (d.backtracks || []).map((b) => `${b[0]}×${b[1]}`).join(", ") || "—");
    addRow(table, "seed path", JSON.stringify(d.seed_path || []));
    addRow(table, "on chosen path", chosen.has(id) ? "yes" : "no");
    section(panel, "scores", table);
    const sol = document.createElement("pre"); sol.id = "detail-solution";
    sol.textContent = pathTo(id).slice(1).map((a) => nodes[a].text).join("");
    section(panel, "solution so far (alive)", sol);
  }

  function panZoom() {
    const svg = $("tree");
    svg.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const r = svg.getBoundingClientRect(), mx = ev.clientX - r.left, my = ev.clientY - r.top;
      const k = Math.min(Math.max(view.k * Math.exp(-ev.deltaY * 0.0015), 0.02), 6);
      view.tx = mx - (mx - view.tx) * (k / view.k); view.ty = my - (my - view.ty) * (k / view.k); view.k = k;
      applyView();
    }, { passive: false });
    let drag = null;
    svg.addEventListener("mousedown", (ev) => { drag = { x: ev.clientX, y: ev.clientY, tx: view.tx, ty: view.ty }; view.moved = false; });
    window.addEventListener("mousemove", (ev) => {
      if (!drag) return;
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) { view.moved = true; svg.classList.add("dragging"); }
      if (view.moved) { view.tx = drag.tx + dx; view.ty = drag.ty + dy; applyView(); }
    });
    window.addEventListener("mouseup", () => { drag = null; svg.classList.remove("dragging"); setTimeout(() => { view.moved = false; }, 0); });
  }

  $("question").textContent = tree.question;
  $("question").title = tree.question;
  build();
  if (n > AUTO_COLLAPSE) collapseOffPath();
  fit();
  panZoom();
  const tau0 = typeof payload.threshold === "number" ? payload.threshold : 0.5;
  setThreshold(tau0);
  $("threshold").addEventListener("input", (ev) => setThreshold(ev.target.value));
  $("fit").addEventListener("click", fit);
  $("expand-all").addEventListener("click", () => { collapsed.clear(); fit(); });
  $("collapse-off-path").addEventListener("click", () => { collapseOffPath(); fit(); });
  window.rewindViewer = { select, setThreshold, toggle, fit, collapseOffPath, nodeCount: n };
  document.body.dataset.ready = "1";
})();
