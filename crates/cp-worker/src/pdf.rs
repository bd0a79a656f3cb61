//! Plain text as a PDF document: A4 pages of Courier (so lines wrap at an exact width), an
//! optional title in Helvetica Bold, no dependencies. The standard fonts need no embedding;
//! text outside Latin-1 is shown as `?` (their WinAnsi encoding has nothing for it).

use std::fmt::Write;

const PAGE_WIDTH: u32 = 595;
const PAGE_HEIGHT: u32 = 842;
const MARGIN: u32 = 56;
const FONT_SIZE: u32 = 10;
const LEADING: u32 = 14;
/// Courier is 0.6 em wide: 80 characters of 10 pt fill the 483 pt between the margins.
const COLUMNS: usize = 80;
const LINES_PER_PAGE: usize = ((PAGE_HEIGHT - 2 * MARGIN) / LEADING) as usize;
/// Lines the title takes on the first page.
const TITLE_LINES: usize = 3;

/// A PDF document showing `text`, wrapped at word boundaries, with `title` above it.
pub fn render(title: Option<&str>, text: &str) -> Vec<u8> {
    let lines = wrap(text);
    let mut pages: Vec<&[String]> = Vec::new();
    let mut rest = &lines[..];
    let mut room = LINES_PER_PAGE - if title.is_some() { TITLE_LINES } else { 0 };
    loop {
        let n = rest.len().min(room);
        pages.push(&rest[..n]);
        rest = &rest[n..];
        room = LINES_PER_PAGE;
        if rest.is_empty() {
            break;
        }
    }
    // Objects: 1 catalog, 2 pages, 3 body font, 4 title font, 5 info, then a page and its
    // content for each page.
    let mut objects: Vec<Vec<u8>> = Vec::new();
    let kids: Vec<String> = (0..pages.len()).map(|i| format!("{} 0 R", 6 + 2 * i)).collect();
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    objects.push(format!("<< /Type /Pages /Kids [{}] /Count {} >>", kids.join(" "), pages.len()).into_bytes());
    objects.push(b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>".to_vec());
    objects.push(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>".to_vec());
    objects.push(
        format!(
            "<< /Title ({}) /Producer (kubiya-cp) >>",
            escape(title.unwrap_or_default())
        )
        .into_bytes(),
    );
    for (i, page) in pages.iter().enumerate() {
        let mut content = String::new();
        let mut top = PAGE_HEIGHT - MARGIN - FONT_SIZE;
        if i == 0
            && let Some(t) = title
        {
            let _ = writeln!(content, "BT /F2 16 Tf {MARGIN} {top} Td ({}) Tj ET", escape(t));
            top -= TITLE_LINES as u32 * LEADING;
        }
        let _ = writeln!(content, "BT /F1 {FONT_SIZE} Tf {LEADING} TL {MARGIN} {top} Td");
        for line in page.iter() {
            let _ = writeln!(content, "({}) Tj T*", escape(line));
        }
        content.push_str("ET\n");
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] \
                 /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {} 0 R >>",
                7 + 2 * i
            )
            .into_bytes(),
        );
        objects.push(format!("<< /Length {} >>\nstream\n{content}endstream", content.len()).into_bytes());
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    let mut table = format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for o in offsets {
        let _ = writeln!(table, "{o:010} 00000 n ");
    }
    let _ = write!(
        table,
        "trailer\n<< /Size {} /Root 1 0 R /Info 5 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    );
    out.extend_from_slice(table.as_bytes());
    out
}

/// The text's lines, each at most `COLUMNS` characters, broken at spaces where one is near.
fn wrap(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for raw in text.replace('\t', "    ").lines() {
        let mut line: Vec<char> = raw.trim_end().chars().collect();
        while line.len() > COLUMNS {
            let cut = line[..=COLUMNS]
                .iter()
                .rposition(|c| *c == ' ')
                .filter(|at| *at > COLUMNS / 2)
                .unwrap_or(COLUMNS);
            lines.push(line[..cut].iter().collect());
            let skip = usize::from(line.get(cut) == Some(&' '));
            line.drain(..cut + skip);
        }
        lines.push(line.into_iter().collect());
    }
    lines
}

/// A PDF string's body: `\`, `(` and `)` escaped, Latin-1 as octal escapes, the rest `?`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '(' | ')' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            '\u{a0}'..='\u{ff}' => {
                let _ = write!(out, "\\{:03o}", c as u32);
            }
            _ => out.push('?'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte offsets of the cross-reference table point at their objects, and the
    /// trailer's `startxref` at the table.
    fn check_structure(pdf: &[u8]) -> usize {
        let text = String::from_utf8(pdf.to_vec()).expect("the document is ASCII");
        assert!(text.starts_with("%PDF-1.4\n") && text.ends_with("%%EOF\n"));
        let start: usize = text
            .rsplit("startxref\n")
            .next()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(text[start..].starts_with("xref\n"));
        let entries: Vec<&str> = text[start..]
            .lines()
            .skip(3)
            .take_while(|l| !l.starts_with("trailer"))
            .collect();
        for (i, e) in entries.iter().enumerate() {
            let at: usize = e[..10].parse().unwrap();
            assert!(
                text[at..].starts_with(&format!("{} 0 obj\n", i + 1)),
                "object {}",
                i + 1
            );
        }
        // Each stream's /Length is its content's.
        for part in text.split("<< /Length ").skip(1) {
            let (len, rest) = part.split_once(" >>\nstream\n").unwrap();
            let len: usize = len.parse().unwrap();
            assert!(rest[len..].starts_with("endstream"));
        }
        text.matches("/Type /Page ").count()
    }

    #[test]
    fn documents_are_well_formed_and_paginated() {
        let pdf = render(Some("Report (Q3) \\ été"), "Hello, world.\nSecond line");
        assert_eq!(check_structure(&pdf), 1);
        let text = String::from_utf8(pdf).unwrap();
        assert!(text.contains("(Report \\(Q3\\) \\\\ \\351t\\351) Tj"), "{text}");
        assert!(text.contains("(Hello, world.) Tj T*"));
        let long: String = (0..300).map(|i| format!("line {i}\n")).collect();
        assert_eq!(check_structure(&render(None, &long)), 300usize.div_ceil(LINES_PER_PAGE));
        assert_eq!(check_structure(&render(None, "")), 1);
    }

    #[test]
    fn lines_wrap_at_spaces_or_at_the_width() {
        let words = "word ".repeat(40);
        let lines = wrap(&words);
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() <= COLUMNS && !l.starts_with(' '))
        );
        assert_eq!(lines.join(" ").split_whitespace().count(), 40);
        let unbroken = "x".repeat(200);
        assert_eq!(
            wrap(&unbroken).iter().map(String::len).collect::<Vec<_>>(),
            vec![80, 80, 40]
        );
        assert_eq!(escape("✓ ok"), "? ok");
    }
}
