//! The file_system skill as a tool: read, save, list and search files, confined to the
//! skill's `base_dir`. A path that leaves it (`..`, an absolute path elsewhere, a symlink out)
//! is refused.

use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

/// Most bytes of a file handed to the model, and most search hits.
const MAX_READ: usize = 64 * 1024;
const MAX_HITS: usize = 200;

#[derive(Debug, Clone)]
pub struct Files {
    base: PathBuf,
    read: bool,
    save: bool,
    list: bool,
    search: bool,
}

impl Files {
    pub fn from_config(config: &Value, working_dir: Option<&str>) -> Files {
        let flag = |k: &str| config[k].as_bool().unwrap_or(true);
        let base = config["base_dir"].as_str().or(working_dir).unwrap_or(".");
        Files {
            base: PathBuf::from(base),
            read: flag("enable_read_file"),
            save: flag("enable_save_file"),
            list: flag("enable_list_files"),
            search: flag("enable_search_files"),
        }
    }

    /// The JSON Schema of the tool's arguments.
    pub fn parameters(&self) -> Value {
        let mut ops = Vec::new();
        for (on, name) in [
            (self.read, "read_file"),
            (self.save, "save_file"),
            (self.list, "list_files"),
            (self.search, "search_files"),
        ] {
            if on {
                ops.push(name);
            }
        }
        json!({
            "type": "object",
            "properties": {
                "operation": {"type": "string", "enum": ops},
                "path": {"type": "string", "description": "Relative to the base directory"},
                "content": {"type": "string", "description": "save_file: the new content"},
                "pattern": {"type": "string", "description": "search_files: text to find in names and contents"},
            },
            "required": ["operation"],
        })
    }

    fn resolve(&self, path: &str, must_exist: bool) -> Result<PathBuf, String> {
        resolve_under(&self.base, path, must_exist)
    }

    /// Runs one operation; its output and whether it failed.
    pub async fn run(&self, args: &Value) -> (String, bool) {
        let path = args["path"].as_str().unwrap_or(".");
        let result = match args["operation"].as_str().unwrap_or_default() {
            "read_file" if self.read => self.read_file(path).await,
            "save_file" if self.save => self.save_file(path, args["content"].as_str().unwrap_or_default()).await,
            "list_files" if self.list => self.list_files(path).await,
            "search_files" if self.search => {
                self.search_files(path, args["pattern"].as_str().unwrap_or_default())
                    .await
            }
            other => Err(format!("the operation '{other}' is not enabled for this skill")),
        };
        match result {
            Ok(out) => (out, false),
            Err(e) => (e, true),
        }
    }

    async fn read_file(&self, path: &str) -> Result<String, String> {
        let file = self.resolve(path, true)?;
        // A FIFO or a device would block or never end.
        if !tokio::fs::metadata(&file).await.is_ok_and(|m| m.is_file()) {
            return Err(format!("'{path}' is not a regular file"));
        }
        let bytes = tokio::fs::read(&file).await.map_err(|e| format!("'{path}': {e}"))?;
        let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_READ)]).into_owned();
        if bytes.len() > MAX_READ {
            text.push_str(&format!("\n[truncated: the file has {} bytes]", bytes.len()));
        }
        Ok(text)
    }

    async fn save_file(&self, path: &str, content: &str) -> Result<String, String> {
        let file = self.resolve(path, false)?;
        write_no_follow(&file, content.as_bytes())
            .await
            .map_err(|e| format!("'{path}': {e}"))?;
        Ok(format!("saved {} bytes to {path}", content.len()))
    }

    async fn list_files(&self, path: &str) -> Result<String, String> {
        let dir = self.resolve(path, true)?;
        let mut entries = tokio::fs::read_dir(&dir).await.map_err(|e| format!("'{path}': {e}"))?;
        let mut names = Vec::new();
        while let Ok(Some(e)) = entries.next_entry().await {
            let suffix = if e.file_type().await.map(|t| t.is_dir()).unwrap_or(false) {
                "/"
            } else {
                ""
            };
            names.push(format!("{}{suffix}", e.file_name().to_string_lossy()));
        }
        names.sort();
        Ok(names.join("\n"))
    }

    async fn search_files(&self, path: &str, pattern: &str) -> Result<String, String> {
        if pattern.is_empty() {
            return Err("search_files needs a pattern".into());
        }
        let root = self.resolve(path, true)?;
        let base = self.base.canonicalize().map_err(|e| e.to_string())?;
        let mut hits = Vec::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
                continue;
            };
            while let Ok(Some(e)) = entries.next_entry().await {
                let p = e.path();
                let Ok(kind) = e.file_type().await else { continue };
                // Symlinks are not followed: one could lead out of the base directory.
                if kind.is_symlink() {
                    continue;
                }
                let shown = p.strip_prefix(&base).unwrap_or(&p).display().to_string();
                if kind.is_dir() {
                    stack.push(p);
                } else if !kind.is_file() {
                    continue;
                } else if shown.contains(pattern) {
                    hits.push(shown);
                } else if let Ok(text) = tokio::fs::read_to_string(&p).await
                    && let Some(n) = text.lines().position(|l| l.contains(pattern))
                {
                    hits.push(format!("{shown}:{}", n + 1));
                }
                if hits.len() >= MAX_HITS {
                    return Ok(hits.join("\n"));
                }
            }
        }
        Ok(if hits.is_empty() {
            "no match".into()
        } else {
            hits.join("\n")
        })
    }
}

/// `path` inside `base`, or why not. Symlinks are followed before the check.
pub(crate) fn resolve_under(base: &Path, path: &str, must_exist: bool) -> Result<PathBuf, String> {
    let base = base
        .canonicalize()
        .map_err(|e| format!("the base directory {} is not usable: {e}", base.display()))?;
    let relative = Path::new(path);
    if relative.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("'{path}' leaves the base directory"));
    }
    let joined = if relative.is_absolute() {
        relative.to_path_buf()
    } else {
        base.join(relative)
    };
    // A symlink as the last part is refused even when it dangles (`exists()` follows it
    // and says no, then a write would follow it out).
    if joined.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) && !must_exist {
        return Err(format!("'{path}' is a symbolic link"));
    }
    let resolved = if must_exist || joined.exists() {
        joined.canonicalize().map_err(|e| format!("'{path}': {e}"))?
    } else {
        let parent = joined
            .parent()
            .ok_or_else(|| format!("'{path}' has no parent directory"))?;
        let parent = parent.canonicalize().map_err(|e| format!("'{path}': {e}"))?;
        parent.join(joined.file_name().ok_or_else(|| format!("'{path}' names no file"))?)
    };
    if !resolved.starts_with(&base) {
        return Err(format!("'{path}' is outside the base directory"));
    }
    Ok(resolved)
}

/// Creates or replaces `file` with `bytes`; O_NOFOLLOW: a symlink put in place after the path
/// was checked is not followed.
pub(crate) async fn write_no_follow(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(file)
        .await?;
    f.write_all(bytes).await?;
    f.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stays_inside_the_base_directory() {
        let dir = std::env::temp_dir().join(format!("kcp-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/notes.txt"), "alpha\nneedle here\n").unwrap();
        let f = Files::from_config(&json!({"base_dir": dir.to_str().unwrap()}), None);
        let (out, err) = f
            .run(&json!({"operation": "save_file", "path": "a.txt", "content": "hi"}))
            .await;
        assert!(!err, "{out}");
        assert_eq!(
            f.run(&json!({"operation": "read_file", "path": "a.txt"})).await,
            ("hi".into(), false)
        );
        assert_eq!(
            f.run(&json!({"operation": "list_files", "path": "."})).await,
            ("a.txt\nsub/".into(), false)
        );
        assert_eq!(
            f.run(&json!({"operation": "search_files", "pattern": "needle"})).await,
            ("sub/notes.txt:2".into(), false)
        );
        for escape in ["../../etc/passwd", "/etc/passwd", "sub/../../x"] {
            let (out, err) = f.run(&json!({"operation": "read_file", "path": escape})).await;
            assert!(
                err && (out.contains("leaves") || out.contains("outside")),
                "{escape}: {out}"
            );
        }
        std::os::unix::fs::symlink("/etc", dir.join("out")).unwrap();
        let (out, err) = f.run(&json!({"operation": "read_file", "path": "out/passwd"})).await;
        assert!(err && out.contains("outside"), "{out}");
        // A dangling link is not written through.
        let target = dir.with_extension("victim");
        let _ = std::fs::remove_file(&target);
        std::os::unix::fs::symlink(&target, dir.join("dangling")).unwrap();
        let (out, err) = f
            .run(&json!({"operation": "save_file", "path": "dangling", "content": "x"}))
            .await;
        assert!(err && !target.exists(), "{out}");
        let ro = Files::from_config(
            &json!({"base_dir": dir.to_str().unwrap(), "enable_save_file": false}),
            None,
        );
        assert!(
            ro.run(&json!({"operation": "save_file", "path": "b.txt", "content": "x"}))
                .await
                .1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
