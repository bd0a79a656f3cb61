//! The file_generation skill: `generate_json`, `generate_csv`, `generate_text` and
//! `generate_pdf` write files under the skill's `output_directory`, with the file_system
//! tool's path rules. Each file written is described for a `file_generated` event.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::files::{resolve_under, write_no_follow};

/// Largest file a tool writes.
const MAX_FILE: usize = 10 << 20;

/// What one tool writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    Csv,
    Text,
    Pdf,
}

impl Kind {
    /// The kind of a file_generation tool name.
    pub fn of_tool(name: &str) -> Option<Kind> {
        match name {
            "generate_json" => Some(Kind::Json),
            "generate_csv" => Some(Kind::Csv),
            "generate_text" => Some(Kind::Text),
            "generate_pdf" => Some(Kind::Pdf),
            _ => None,
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            Kind::Json => "application/json",
            Kind::Csv => "text/csv",
            Kind::Text => "text/plain",
            Kind::Pdf => "application/pdf",
        }
    }

    pub fn parameters(self) -> Value {
        let filename = json!({"type": "string", "description": "Relative to the output directory"});
        match self {
            Kind::Json => json!({
                "type": "object",
                "properties": {"filename": filename, "data": {"description": "The JSON value to write"}},
                "required": ["filename", "data"],
            }),
            Kind::Csv => json!({
                "type": "object",
                "properties": {
                    "filename": filename,
                    "content": {"type": "string", "description": "CSV text"},
                    "rows": {"type": "array", "description": "Rows: lists of cells, or objects (their keys become the header)"},
                },
                "required": ["filename"],
            }),
            Kind::Text | Kind::Pdf => {
                let mut p = json!({
                    "type": "object",
                    "properties": {"filename": filename, "content": {"type": "string"}},
                    "required": ["filename", "content"],
                });
                if self == Kind::Pdf {
                    p["properties"]["title"] = json!({"type": "string"});
                }
                p
            }
        }
    }
}

/// Writes generated files under one directory.
#[derive(Debug, Clone)]
pub struct Generator {
    dir: PathBuf,
}

impl Generator {
    /// Files go to `output_directory`, else the run's working directory, else `fallback` (a
    /// directory of the run's own: never the worker's).
    pub fn from_config(config: &Value, working_dir: Option<&str>, fallback: PathBuf) -> Generator {
        let dir = config["output_directory"].as_str().or(working_dir).map(PathBuf::from);
        Generator {
            dir: dir.unwrap_or(fallback),
        }
    }

    /// Writes the file `args` describe; the answer for the model and the file's description
    /// (`name`, `path`, `size`, `media_type`), or why not.
    pub async fn run(&self, kind: Kind, args: &Value) -> Result<(String, Value), String> {
        let Some(filename) = args["filename"].as_str().filter(|f| !f.trim().is_empty()) else {
            return Err("`filename` is required".into());
        };
        let bytes = match kind {
            Kind::Json => {
                let data = args.get("data").ok_or("`data` is required")?;
                let mut text = serde_json::to_string_pretty(data).map_err(|e| e.to_string())?;
                text.push('\n');
                text.into_bytes()
            }
            Kind::Csv => match (&args["content"], &args["rows"]) {
                (Value::String(content), _) => content.clone().into_bytes(),
                (_, Value::Array(rows)) => csv(rows)?.into_bytes(),
                _ => return Err("generate_csv needs `content` (CSV text) or `rows`".into()),
            },
            Kind::Text => args["content"]
                .as_str()
                .ok_or("`content` is required")?
                .as_bytes()
                .to_vec(),
            Kind::Pdf => {
                let content = args["content"].as_str().ok_or("`content` is required")?;
                crate::pdf::render(args["title"].as_str(), content)
            }
        };
        if bytes.len() > MAX_FILE {
            return Err(format!(
                "the file would have {} bytes; at most {MAX_FILE} are written",
                bytes.len()
            ));
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| format!("the output directory {} is not usable: {e}", self.dir.display()))?;
        let file = resolve_under(&self.dir, filename, false)?;
        write_no_follow(&file, &bytes)
            .await
            .map_err(|e| format!("'{filename}': {e}"))?;
        let described = json!({
            "name": filename, "path": file.display().to_string(), "size": bytes.len(),
            "media_type": kind.media_type(),
        });
        Ok((
            format!("wrote {filename} ({} bytes, {})", bytes.len(), kind.media_type()),
            described,
        ))
    }
}

/// Rows as CSV (RFC 4180): lists of cells as they are, objects under a header of every key
/// (sorted within each object, as JSON objects are read; new keys of later rows at the end).
fn csv(rows: &[Value]) -> Result<String, String> {
    let cell = |v: &Value| -> String {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text
        }
    };
    let mut header: Vec<&str> = Vec::new();
    for row in rows {
        if let Value::Object(o) = row {
            for k in o.keys() {
                if !header.contains(&k.as_str()) {
                    header.push(k);
                }
            }
        }
    }
    let mut out = String::new();
    if !header.is_empty() {
        let names: Vec<String> = header.iter().map(|h| cell(&json!(h))).collect();
        out.push_str(&names.join(","));
        out.push_str("\r\n");
    }
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = match row {
            Value::Array(items) => items.iter().map(cell).collect(),
            Value::Object(o) => header.iter().map(|h| o.get(*h).map(cell).unwrap_or_default()).collect(),
            _ => return Err(format!("rows[{i}] must be a list of cells or an object")),
        };
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_kind_is_written_under_the_output_directory() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("reports");
        let g = Generator::from_config(&json!({"output_directory": out}), None, PathBuf::new());
        let (answer, file) = g
            .run(Kind::Json, &json!({"filename": "a.json", "data": {"n": 1}}))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("a.json")).unwrap(),
            "{\n  \"n\": 1\n}\n"
        );
        assert_eq!(
            (file["name"].as_str(), file["size"].as_u64()),
            (Some("a.json"), Some(13))
        );
        assert_eq!(file["media_type"], "application/json");
        assert!(answer.starts_with("wrote a.json (13 bytes"), "{answer}");
        let rows = json!([{"name": "a, b", "n": 1}, {"n": 2, "note": "say \"hi\""}]);
        g.run(Kind::Csv, &json!({"filename": "t.csv", "rows": rows}))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("t.csv")).unwrap(),
            "n,name,note\r\n1,\"a, b\",\r\n2,,\"say \"\"hi\"\"\"\r\n"
        );
        g.run(Kind::Csv, &json!({"filename": "u.csv", "rows": [[1, "x"], [2, null]]}))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(out.join("u.csv")).unwrap(), "1,x\r\n2,\r\n");
        g.run(Kind::Text, &json!({"filename": "n.txt", "content": "hello"}))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(out.join("n.txt")).unwrap(), "hello");
        let (_, file) = g
            .run(
                Kind::Pdf,
                &json!({"filename": "r.pdf", "content": "body", "title": "T"}),
            )
            .await
            .unwrap();
        assert!(std::fs::read(out.join("r.pdf")).unwrap().starts_with(b"%PDF-1.4"));
        assert_eq!(file["media_type"], "application/pdf");
    }

    #[tokio::test]
    async fn paths_and_arguments_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let g = Generator::from_config(&json!({"output_directory": dir.path()}), None, PathBuf::new());
        for (args, why) in [
            (
                json!({"filename": "../x.txt", "content": "x"}),
                "leaves the base directory",
            ),
            (
                json!({"filename": "/etc/x.txt", "content": "x"}),
                "outside the base directory",
            ),
            (json!({"filename": "nope/x.txt", "content": "x"}), "No such file"),
            (json!({"content": "x"}), "`filename` is required"),
            (json!({"filename": "x.txt"}), "`content` is required"),
        ] {
            let err = g.run(Kind::Text, &args).await.unwrap_err();
            assert!(err.contains(why), "{args}: {err}");
        }
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        let err = g
            .run(Kind::Text, &json!({"filename": "link", "content": "x"}))
            .await
            .unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        let err = g
            .run(Kind::Csv, &json!({"filename": "x.csv", "rows": [1]}))
            .await
            .unwrap_err();
        assert!(err.contains("rows[0]"), "{err}");
        let huge = "x".repeat(MAX_FILE + 1);
        let err = g
            .run(Kind::Text, &json!({"filename": "h.txt", "content": huge}))
            .await
            .unwrap_err();
        assert!(err.contains("at most"), "{err}");
    }
}
