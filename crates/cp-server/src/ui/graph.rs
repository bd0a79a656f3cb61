//! Graphs drawn as SVG on the server: a workflow's steps with their states, and the Mermaid
//! flowcharts, sequence diagrams and pie charts agents draw (`diagram` events). Layered
//! layout: each node sits one layer after its furthest predecessor, and a layer is ordered by
//! its predecessors' places.

use std::collections::HashMap;
use std::fmt::Write;

/// The most nodes and links a drawing takes; bigger sources are shown as text.
const MAX_NODES: usize = 400;
const MAX_EDGES: usize = 2000;
const NODE_H: f64 = 44.0;
const GAP_Y: f64 = 18.0;
const GAP_X: f64 = 56.0;
const PAD: f64 = 12.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub label: String,
    /// A second, smaller line (a step's type, or its state).
    pub detail: Option<String>,
    /// A CSS class suffix (`status-running`).
    pub class: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub label: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Direction {
    LeftRight,
    TopDown,
}

/// The links of steps that name the steps they follow (`depends_on`): `steps` gives each
/// step's id and the ids it depends on; unknown ids are skipped.
pub fn dependency_edges<'a>(steps: impl Iterator<Item = (&'a str, &'a [String])> + Clone) -> Vec<Edge> {
    let ids: Vec<&str> = steps.clone().map(|(id, _)| id).collect();
    steps
        .enumerate()
        .flat_map(|(to, (_, deps))| {
            let ids = &ids;
            deps.iter()
                .filter_map(move |d| ids.iter().position(|id| id == d))
                .map(move |from| Edge { from, to, label: None })
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn width_of(node: &Node) -> f64 {
    let chars = node
        .label
        .chars()
        .count()
        .max(node.detail.as_deref().map_or(0, |d| d.chars().count()));
    (chars as f64 * 7.2 + 24.0).clamp(90.0, 260.0)
}

/// The layer of each node: 0 without predecessors, else one after the furthest one. Edges that
/// close a cycle are ignored.
fn layers(n: usize, edges: &[Edge]) -> Vec<usize> {
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    for e in edges {
        if e.from != e.to && e.from < n && e.to < n {
            preds[e.to].push(e.from);
        }
    }
    // 0 = unseen, 1 = on the path being walked, 2 = done.
    let mut state = vec![0u8; n];
    let mut layer = vec![0usize; n];
    for start in 0..n {
        if state[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&p) = preds[node].get(*next) {
                *next += 1;
                if state[p] == 0 {
                    state[p] = 1;
                    stack.push((p, 0));
                }
            } else {
                layer[node] = preds[node]
                    .iter()
                    .filter(|&&p| state[p] == 2)
                    .map(|&p| layer[p] + 1)
                    .max()
                    .unwrap_or(0);
                state[node] = 2;
                stack.pop();
            }
        }
    }
    layer
}

/// The SVG of `nodes` joined by `edges`; `id` names its arrow marker (unique on the page).
pub fn draw(id: &str, nodes: &[Node], edges: &[Edge], direction: Direction) -> String {
    let n = nodes.len().min(MAX_NODES);
    let edges: Vec<&Edge> = edges.iter().filter(|e| e.from < n && e.to < n).collect();
    let owned: Vec<Edge> = edges.iter().map(|e| (*e).clone()).collect();
    let layer = layers(n, &owned);
    let depth = layer.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_layer: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (i, &l) in layer.iter().enumerate() {
        by_layer[l].push(i);
    }
    // Order each layer by the mean place of its nodes' predecessors.
    let mut place = vec![0.0_f64; n];
    for row in by_layer.iter_mut() {
        let key = |i: &usize| {
            let ps: Vec<f64> = owned
                .iter()
                .filter(|e| e.to == *i && layer[e.from] < layer[*i])
                .map(|e| place[e.from])
                .collect();
            if ps.is_empty() {
                f64::MAX
            } else {
                ps.iter().sum::<f64>() / ps.len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = row.iter().map(|i| (key(i), *i)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        *row = keyed.into_iter().map(|(_, i)| i).collect();
        for (k, &i) in row.iter().enumerate() {
            place[i] = k as f64;
        }
    }
    // Positions: layers along the direction, nodes across it, each layer centred.
    let widths: Vec<f64> = nodes[..n].iter().map(width_of).collect();
    let mut pos = vec![(0.0_f64, 0.0_f64); n];
    let (mut total_w, mut total_h);
    match direction {
        Direction::LeftRight => {
            let layer_w: Vec<f64> = by_layer
                .iter()
                .map(|r| r.iter().map(|&i| widths[i]).fold(0.0, f64::max))
                .collect();
            let tallest = by_layer.iter().map(|r| r.len()).max().unwrap_or(0) as f64;
            total_h = tallest * (NODE_H + GAP_Y) - GAP_Y + 2.0 * PAD;
            let mut x = PAD;
            for (l, row) in by_layer.iter().enumerate() {
                let h = row.len() as f64 * (NODE_H + GAP_Y) - GAP_Y;
                let mut y = (total_h - h) / 2.0;
                for &i in row {
                    pos[i] = (x + (layer_w[l] - widths[i]) / 2.0, y);
                    y += NODE_H + GAP_Y;
                }
                x += layer_w[l] + GAP_X;
            }
            total_w = x - GAP_X + PAD;
        }
        Direction::TopDown => {
            let row_w: Vec<f64> = by_layer
                .iter()
                .map(|r| r.iter().map(|&i| widths[i] + GAP_Y).sum::<f64>() - GAP_Y)
                .collect();
            total_w = row_w.iter().copied().fold(0.0, f64::max) + 2.0 * PAD;
            let mut y = PAD;
            for (l, row) in by_layer.iter().enumerate() {
                let mut x = (total_w - row_w[l]) / 2.0;
                for &i in row {
                    pos[i] = (x, y);
                    x += widths[i] + GAP_Y;
                }
                y += NODE_H + GAP_X * 0.7;
            }
            total_h = y - GAP_X * 0.7 + PAD;
        }
    }
    total_w = total_w.max(1.0);
    total_h = total_h.max(1.0);

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"graph-svg\" viewBox=\"0 0 {total_w:.0} {total_h:.0}\" \
         width=\"{total_w:.0}\" height=\"{total_h:.0}\" role=\"img\" aria-label=\"{} nodes\">\
         <defs><marker id=\"arrow-{id}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" \
         orient=\"auto-start-reverse\"><path d=\"M0 0L10 5L0 10z\" class=\"arrow\"/></marker></defs>",
        n
    );
    for e in &edges {
        let (a, b) = (e.from, e.to);
        let ((x1, y1), (x2, y2)) = match direction {
            Direction::LeftRight => (
                (pos[a].0 + widths[a], pos[a].1 + NODE_H / 2.0),
                (pos[b].0, pos[b].1 + NODE_H / 2.0),
            ),
            Direction::TopDown => (
                (pos[a].0 + widths[a] / 2.0, pos[a].1 + NODE_H),
                (pos[b].0 + widths[b] / 2.0, pos[b].1),
            ),
        };
        let (c1, c2) = match direction {
            Direction::LeftRight => ((x1 + GAP_X / 2.0, y1), (x2 - GAP_X / 2.0, y2)),
            Direction::TopDown => ((x1, y1 + GAP_X / 3.0), (x2, y2 - GAP_X / 3.0)),
        };
        let _ = write!(
            svg,
            "<path class=\"edge\" d=\"M{x1:.1} {y1:.1}C{:.1} {:.1} {:.1} {:.1} {x2:.1} {y2:.1}\" marker-end=\"url(#arrow-{id})\"/>",
            c1.0, c1.1, c2.0, c2.1
        );
        if let Some(label) = &e.label {
            let _ = write!(
                svg,
                "<text class=\"edge-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                (x1 + x2) / 2.0,
                (y1 + y2) / 2.0 - 4.0,
                escape(label)
            );
        }
    }
    for (i, node) in nodes[..n].iter().enumerate() {
        let (x, y) = pos[i];
        let class = node
            .class
            .as_deref()
            .map(|c| format!(" {}", escape(c)))
            .unwrap_or_default();
        let _ = write!(
            svg,
            "<g class=\"node{class}\" data-node=\"{}\"><title>{}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{NODE_H}\" rx=\"6\"/>",
            escape(&node.id),
            escape(&node.label),
            widths[i]
        );
        let cx = x + widths[i] / 2.0;
        let label_y = if node.detail.is_some() {
            y + 18.0
        } else {
            y + NODE_H / 2.0 + 4.0
        };
        let _ = write!(
            svg,
            "<text x=\"{cx:.1}\" y=\"{label_y:.1}\" text-anchor=\"middle\">{}</text>",
            escape(&shorten(&node.label))
        );
        if let Some(detail) = &node.detail {
            let _ = write!(
                svg,
                "<text class=\"node-detail\" x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                y + 34.0,
                escape(&shorten(detail))
            );
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");
    svg
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(34) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// A Mermaid source drawn as SVG: flowcharts (`graph`/`flowchart`), sequence diagrams and pie
/// charts; `None` for the other kinds, which the page shows as source.
pub fn mermaid(source: &str, id: &str) -> Option<String> {
    let mut lines = source
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("%%"));
    let header = lines.next()?;
    let mut words = header.split_whitespace();
    match words.next()? {
        "graph" | "flowchart" => {
            let direction = match words.next().unwrap_or("TD") {
                "LR" | "RL" => Direction::LeftRight,
                _ => Direction::TopDown,
            };
            let (nodes, edges) = flowchart(lines)?;
            Some(draw(id, &nodes, &edges, direction))
        }
        "pie" => pie(header, lines),
        "sequenceDiagram" => sequence(lines, id),
        _ => None,
    }
}

/// Node shapes Mermaid writes around a label, outermost first.
const SHAPES: &[(&str, &str)] = &[
    ("((", "))"),
    ("([", "])"),
    ("[[", "]]"),
    ("[(", ")]"),
    ("{{", "}}"),
    ("[/", "/]"),
    ("[\\", "\\]"),
    ("[", "]"),
    ("(", ")"),
    ("{", "}"),
    (">", "]"),
];

/// `A[Label]` → (`A`, Some(`Label`)); `A` → (`A`, None).
fn node_ref(text: &str) -> Option<(String, Option<String>)> {
    let text = text.trim().trim_end_matches(';').trim();
    let id_end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'))
        .unwrap_or(text.len());
    let id = &text[..id_end];
    if id.is_empty() {
        return None;
    }
    let rest = text[id_end..].trim();
    let label = SHAPES.iter().find_map(|(open, close)| {
        rest.strip_prefix(open)
            .and_then(|r| r.strip_suffix(close))
            .map(|l| l.trim().trim_matches('"').to_owned())
    });
    if !rest.is_empty() && label.is_none() {
        return None;
    }
    Some((id.to_owned(), label))
}

/// The arrows Mermaid knows, longest first so `-->` is not read as `--`.
const ARROWS: &[&str] = &["-.->", "<-->", "==>", "-->", "---", "-.-", "===", "--o", "--x"];

/// The first arrow of `s` and where it starts, in one pass: a line costs time in proportion to
/// its length however many arrows it has.
fn next_arrow(s: &str) -> Option<(usize, &'static str)> {
    s.char_indices()
        .filter(|(_, c)| matches!(c, '-' | '=' | '<'))
        .find_map(|(at, _)| ARROWS.iter().find(|a| s[at..].starts_with(**a)).map(|a| (at, *a)))
}

/// Splits `A -->|yes| B --> C` into nodes and labelled links.
fn flowchart<'a>(lines: impl Iterator<Item = &'a str>) -> Option<(Vec<Node>, Vec<Edge>)> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut edges = Vec::new();
    let mut intern = |nodes: &mut Vec<Node>, (id, label): (String, Option<String>)| -> Option<usize> {
        if let Some(&i) = index.get(&id) {
            if let Some(l) = label {
                nodes[i].label = l;
            }
            return Some(i);
        }
        if nodes.len() >= MAX_NODES {
            return None;
        }
        index.insert(id.clone(), nodes.len());
        nodes.push(Node {
            label: label.unwrap_or_else(|| id.clone()),
            id,
            detail: None,
            class: None,
        });
        Some(nodes.len() - 1)
    };
    for line in lines {
        let keyword = line.split_whitespace().next().unwrap_or("");
        if matches!(
            keyword,
            "subgraph" | "end" | "classDef" | "class" | "style" | "linkStyle" | "click" | "direction"
        ) {
            continue;
        }
        let mut rest = line;
        let mut previous: Option<usize> = None;
        let mut pending_label: Option<String> = None;
        loop {
            let (left, after) = match next_arrow(rest) {
                Some((at, a)) => (&rest[..at], Some(&rest[at + a.len()..])),
                None => (rest, None),
            };
            // `A -- text --> B`: the text before the arrow belongs to the link.
            let (left, inline_label) = match left.split_once(" -- ") {
                Some((l, label)) => (l, Some(label.trim().to_owned())),
                None => (left, None),
            };
            let node = intern(&mut nodes, node_ref(left)?)?;
            if let Some(p) = previous {
                if edges.len() >= MAX_EDGES {
                    return None;
                }
                edges.push(Edge {
                    from: p,
                    to: node,
                    label: pending_label.take(),
                });
            }
            let Some(mut after) = after else { break };
            pending_label = inline_label;
            // `-->|label| B`
            if let Some(stripped) = after.trim_start().strip_prefix('|') {
                let (label, tail) = stripped.split_once('|')?;
                pending_label = Some(label.trim().to_owned());
                after = tail;
            }
            previous = Some(node);
            rest = after;
        }
    }
    (!nodes.is_empty()).then_some((nodes, edges))
}

/// Sequence arrows, longest first: dashed ones start with `--`.
const MESSAGES: &[&str] = &["-->>", "->>", "--x", "-x", "--)", "-)", "-->", "->"];
const MAX_MESSAGES: usize = 500;
const MAX_PARTICIPANTS: usize = 40;

/// `participant A as Alice`, `actor B`, `A->>B: text`, `Note over A: text`; blocks (`loop`,
/// `alt`, `else`, `end`, …) are drawn as their messages only.
fn sequence<'a>(lines: impl Iterator<Item = &'a str>, id: &str) -> Option<String> {
    let mut names: Vec<(String, String)> = Vec::new();
    let index = |names: &mut Vec<(String, String)>, key: &str, label: Option<&str>| -> Option<usize> {
        if let Some(i) = names.iter().position(|(k, _)| k == key) {
            if let Some(l) = label {
                names[i].1 = l.to_owned();
            }
            return Some(i);
        }
        if names.len() >= MAX_PARTICIPANTS || key.is_empty() {
            return None;
        }
        names.push((key.to_owned(), label.unwrap_or(key).to_owned()));
        Some(names.len() - 1)
    };
    // (from, to, text, dashed) or a note over (from, to).
    let mut rows: Vec<(usize, usize, String, bool, bool)> = Vec::new();
    for line in lines {
        if rows.len() >= MAX_MESSAGES {
            return None;
        }
        let word = line.split_whitespace().next().unwrap_or("");
        if let Some(rest) = line
            .strip_prefix("participant ")
            .or_else(|| line.strip_prefix("actor "))
        {
            let (key, label) = match rest.split_once(" as ") {
                Some((k, l)) => (k.trim(), Some(l.trim())),
                None => (rest.trim(), None),
            };
            index(&mut names, key, label)?;
            continue;
        }
        if word.eq_ignore_ascii_case("note") {
            let (place, text) = line.split_once(':')?;
            let who = place.split_whitespace().skip(2).collect::<String>();
            let mut ends = who.split(',').map(str::trim);
            let a = index(&mut names, ends.next()?, None)?;
            let b = match ends.next() {
                Some(k) => index(&mut names, k, None)?,
                None => a,
            };
            rows.push((a.min(b), a.max(b), text.trim().to_owned(), false, true));
            continue;
        }
        let Some((at, arrow)) = line
            .char_indices()
            .filter(|(_, c)| *c == '-')
            .find_map(|(at, _)| MESSAGES.iter().find(|m| line[at..].starts_with(**m)).map(|m| (at, *m)))
        else {
            // `loop`, `alt`, `end`, `autonumber`, `activate`… carry no message.
            continue;
        };
        let from = line[..at].trim();
        let (to, text) = line[at + arrow.len()..]
            .split_once(':')
            .unwrap_or((&line[at + arrow.len()..], ""));
        let to = to.trim().trim_start_matches(['+', '-']);
        let (a, b) = (index(&mut names, from, None)?, index(&mut names, to, None)?);
        rows.push((a, b, text.trim().to_owned(), arrow.starts_with("--"), false));
    }
    if names.is_empty() {
        return None;
    }
    const COL: f64 = 170.0;
    const ROW: f64 = 38.0;
    const TOP: f64 = 46.0;
    let x = |i: usize| PAD + COL / 2.0 + i as f64 * COL;
    let width = names.len() as f64 * COL + 2.0 * PAD;
    let height = TOP + (rows.len() as f64 + 1.0) * ROW + PAD;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"graph-svg sequence\" viewBox=\"0 0 {width:.0} {height:.0}\" \
         width=\"{width:.0}\" height=\"{height:.0}\" role=\"img\" aria-label=\"sequence of {} messages\">\
         <defs><marker id=\"arrow-{id}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" \
         orient=\"auto-start-reverse\"><path d=\"M0 0L10 5L0 10z\" class=\"arrow\"/></marker></defs>",
        rows.len()
    );
    for (i, (_, label)) in names.iter().enumerate() {
        let _ = write!(
            svg,
            "<g class=\"node\"><rect x=\"{:.1}\" y=\"{PAD}\" width=\"{:.1}\" height=\"28\" rx=\"6\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text></g>\
             <path class=\"lifeline\" d=\"M{:.1} {:.1}V{:.1}\"/>",
            x(i) - COL / 2.0 + 10.0,
            COL - 20.0,
            x(i),
            PAD + 18.0,
            escape(&shorten(label)),
            x(i),
            PAD + 28.0,
            height - PAD
        );
    }
    for (k, (a, b, text, dashed, note)) in rows.iter().enumerate() {
        let y = TOP + (k as f64 + 1.0) * ROW;
        if *note {
            let (left, right) = (x(*a) - COL / 2.0 + 14.0, x(*b) + COL / 2.0 - 14.0);
            let _ = write!(
                svg,
                "<rect class=\"note-box\" x=\"{left:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"24\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                y - 18.0,
                right - left,
                (left + right) / 2.0,
                y - 2.0,
                escape(&shorten(text))
            );
            continue;
        }
        let class = if *dashed { "edge dashed" } else { "edge" };
        let path = if a == b {
            format!("M{:.1} {:.1}h36v14h-36", x(*a), y - 8.0)
        } else {
            format!("M{:.1} {y:.1}H{:.1}", x(*a), x(*b))
        };
        let _ = write!(
            svg,
            "<path class=\"{class}\" d=\"{path}\" marker-end=\"url(#arrow-{id})\"/>\
             <text class=\"edge-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            (x(*a) + x(*b)) / 2.0 + if a == b { 40.0 } else { 0.0 },
            y - 6.0,
            escape(&shorten(text))
        );
    }
    svg.push_str("</svg>");
    Some(svg)
}

/// `pie title Pets` then `"Dogs" : 386` lines.
fn pie<'a>(header: &str, lines: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut title = header
        .strip_prefix("pie")
        .map(str::trim)
        .unwrap_or("")
        .trim_start_matches("showData")
        .trim()
        .to_owned();
    let mut slices: Vec<(String, f64)> = Vec::new();
    for line in lines {
        if let Some(t) = line.strip_prefix("title") {
            title = t.trim().to_owned();
            continue;
        }
        let (label, value) = line.rsplit_once(':')?;
        let value: f64 = value.trim().parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
        slices.push((label.trim().trim_matches('"').to_owned(), value));
        if slices.len() > 64 {
            return None;
        }
    }
    let total: f64 = slices.iter().map(|s| s.1).sum();
    if slices.is_empty() || total <= 0.0 {
        return None;
    }
    let title = title.strip_prefix("title").map(str::trim).unwrap_or(&title).to_owned();
    let (r, cx, cy) = (90.0_f64, 110.0_f64, 120.0_f64);
    let height = (slices.len() as f64 * 20.0 + 40.0).max(240.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"graph-svg pie\" viewBox=\"0 0 480 {height:.0}\" width=\"480\" \
         height=\"{height:.0}\" role=\"img\" aria-label=\"{}\"><text x=\"10\" y=\"18\" class=\"pie-title\">{}</text>",
        escape(&title),
        escape(&title)
    );
    let mut angle = -std::f64::consts::FRAC_PI_2;
    for (k, (label, value)) in slices.iter().enumerate() {
        let sweep = value / total * std::f64::consts::TAU;
        let class = format!("slice slice-{}", k % 8);
        if sweep >= std::f64::consts::TAU - 1e-9 {
            let _ = write!(svg, "<circle class=\"{class}\" cx=\"{cx}\" cy=\"{cy}\" r=\"{r}\"/>");
        } else if sweep > 0.0 {
            let (x1, y1) = (cx + r * angle.cos(), cy + r * angle.sin());
            let end = angle + sweep;
            let (x2, y2) = (cx + r * end.cos(), cy + r * end.sin());
            let large = i32::from(sweep > std::f64::consts::PI);
            let _ = write!(
                svg,
                "<path class=\"{class}\" d=\"M{cx} {cy}L{x1:.2} {y1:.2}A{r} {r} 0 {large} 1 {x2:.2} {y2:.2}z\"/>"
            );
        }
        angle += sweep;
        let ly = 40.0 + k as f64 * 20.0;
        let _ = write!(
            svg,
            "<rect class=\"{class}\" x=\"230\" y=\"{:.0}\" width=\"12\" height=\"12\"/><text x=\"248\" y=\"{ly:.0}\">{} ({:.1}%)</text>",
            ly - 10.0,
            escape(label),
            value / total * 100.0
        );
    }
    svg.push_str("</svg>");
    Some(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            label: id.into(),
            detail: None,
            class: None,
        }
    }

    #[test]
    fn layers_follow_the_longest_path_and_survive_cycles() {
        let e = |from, to| Edge { from, to, label: None };
        assert_eq!(
            layers(4, &[e(0, 1), e(1, 3), e(0, 2), e(2, 3), e(0, 3)]),
            vec![0, 1, 1, 2]
        );
        let cyclic = layers(3, &[e(0, 1), e(1, 2), e(2, 0)]);
        assert_eq!(cyclic.len(), 3);
        let svg = draw(
            "t",
            &[node("a"), node("b"), node("c")],
            &[e(0, 1), e(1, 2), e(2, 0)],
            Direction::TopDown,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn flowcharts_read_shapes_chains_and_labels() {
        let (nodes, edges) = flowchart(
            [
                "A[Start] --> B{Is it?}",
                "B -->|Yes| C(Do it) --> D",
                "B -- No --> E[(Store)]",
                "classDef x fill:#f00",
                "D",
            ]
            .into_iter(),
        )
        .unwrap();
        let labels: Vec<&str> = nodes.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(labels, ["Start", "Is it?", "Do it", "D", "Store"]);
        assert_eq!(edges.len(), 4);
        assert_eq!(edges[1].label.as_deref(), Some("Yes"));
        assert_eq!(edges[3].label.as_deref(), Some("No"));
        assert_eq!((edges[3].from, edges[3].to), (1, 4));
    }

    #[test]
    fn text_is_escaped_and_unknown_kinds_are_left_as_source() {
        let svg = mermaid("graph LR\n  a[\"<script>x</script>\"] --> b[Tom & Jerry]", "d1").unwrap();
        assert!(
            !svg.contains("<script>") && svg.contains("&lt;script&gt;") && svg.contains("Tom &amp; Jerry"),
            "{svg}"
        );
        let seq = mermaid(
            "sequenceDiagram\n participant U as User <you>\n U->>Agent: deploy?\n loop checks\n Agent-->>U: done & dusted\n end\n Note over U,Agent: ok\n Agent->>Agent: think",
            "d2",
        )
        .unwrap();
        assert!(
            seq.contains("User &lt;you&gt;") && seq.contains("done &amp; dusted") && seq.contains("edge dashed"),
            "{seq}"
        );
        assert_eq!(seq.matches("class=\"lifeline\"").count(), 2);
        assert!(mermaid("classDiagram\n A <|-- B", "d7").is_none());
        let chain = format!("graph LR\n{}", "A --> B --> ".repeat(4000) + "A");
        // 2,000 arrows and a 42 KB name on one line: read in one pass (it took 0.5 s when each
        // arrow searched the rest of the line for every kind of arrow).
        let wide = format!("graph LR\n{}{}", "a-->".repeat(2000), "b".repeat(42_000));
        assert!(mermaid(&wide, "d6").is_some());
        assert!(mermaid(&chain, "d5").is_none(), "too many links are left as source");
        assert!(mermaid("graph TD\n A[unclosed --> B", "d3").is_none());
        let pie = mermaid("pie title Pets\n \"Dogs\" : 3\n \"Cats\" : 1", "d4").unwrap();
        assert!(pie.contains("Dogs (75.0%)") && pie.contains("Pets"), "{pie}");
    }
}
