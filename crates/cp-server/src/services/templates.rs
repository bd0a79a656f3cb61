//! The template engine of workflows: minijinja with strict undefined values and no loader,
//! so a template reads only the values it is given (never a file) and a misspelt name is an
//! error rather than an empty string. Templates are compiled when a workflow is written, and
//! every variable they read is checked against what the step will have.

use std::collections::HashSet;

use minijinja::{Environment, UndefinedBehavior};

/// Instructions one render may run: far more than any prompt needs, far less than a stall.
pub const FUEL: u64 = 200_000;

/// The environment every workflow template is compiled and rendered in.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // A template a member wrote runs on the server: its loops get a budget, not the CPU.
    env.set_fuel(Some(FUEL));
    // For a value written inside a command's own quotes: `"…{{ x | dq }}…"`, `'…{{ x | sq }}…'`.
    env.add_filter("dq", |v: minijinja::Value| {
        let escaped = text_of(&v)
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "\\$")
            .replace('`', "\\`");
        minijinja::Value::from_safe_string(escaped)
    });
    env.add_filter("sq", |v: minijinja::Value| {
        minijinja::Value::from_safe_string(text_of(&v).replace('\'', r"'\''"))
    });
    env
}

/// A value as the text a command gets: strings as they are, lists and maps as JSON.
fn text_of(value: &minijinja::Value) -> String {
    use minijinja::value::ValueKind;
    match value.kind() {
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        ValueKind::Map | ValueKind::Seq => serde_json::to_string(value).unwrap_or_default(),
        _ => value.to_string(),
    }
}

/// The environment of `command` templates: every value a template writes is quoted for the
/// shell (`'…'`), so an input or a model's output lands in the command as one word and never
/// as shell syntax; numbers, and strings marked `|safe` by the workflow's author, go in as
/// they are. Values are written as words of their own: outside the template's own quotes.
pub fn shell_environment() -> Environment<'static> {
    let mut env = environment();
    env.set_formatter(shell_formatter);
    env
}

fn shell_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    if value.is_safe() || value.is_number() {
        return minijinja::escape_formatter(out, state, value);
    }
    write!(out, "{}", shell_quote(&text_of(value)))
        .map_err(|_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "the command could not be written"))
}

/// `s` as one POSIX shell word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What a step's templates may read: `inputs`, `run`, the steps it depends on (directly or
/// not) and, in a `for_each` step, `item` and `index`.
pub struct Scope<'a> {
    pub ancestors: &'a HashSet<&'a str>,
    pub for_each: bool,
}

/// The fields of `steps.<id>` a template may read (anything below `output`).
const STEP_FIELDS: &[&str] = &["output", "status", "error", "execution_id"];

/// Compiles `source` (an expression when `expression`, as conditions are; a template
/// otherwise) and checks what it reads against `scope`; the problem, said for a user.
pub fn check(env: &Environment<'_>, source: &str, expression: bool, scope: &Scope<'_>) -> Result<(), String> {
    let read = if expression {
        env.compile_expression(source)
            .map_err(|e| describe(&e))?
            .undeclared_variables(true)
    } else {
        env.template_from_str(source)
            .map_err(|e| describe(&e))?
            .undeclared_variables(true)
    };
    let mut read: Vec<String> = read.into_iter().collect();
    read.sort();
    for var in read {
        let mut path = var.split('.');
        match (path.next().unwrap_or_default(), path.next(), path.next()) {
            ("inputs", ..) => {}
            ("run", None | Some("id" | "started_at"), _) => {}
            ("run", Some(f), _) => return Err(format!("run has no '{f}' (it has id and started_at)")),
            ("item" | "index", ..) if scope.for_each => {}
            ("item" | "index", ..) => return Err(format!("'{var}' exists only in a for_each step")),
            ("steps", None, _) => {
                return Err(
                    "refer to another step's result as steps.<id>.output (or status, error, execution_id)".into(),
                );
            }
            ("steps", Some(id), _) if !scope.ancestors.contains(id) => {
                return Err(format!(
                    "reads step '{id}', which this step does not depend on (directly or through others)"
                ));
            }
            ("steps", Some(_), Some(f)) if !STEP_FIELDS.contains(&f) => {
                return Err(format!("a step has no '{f}' (it has {})", STEP_FIELDS.join(", ")));
            }
            ("steps", ..) => {}
            (other, ..) => {
                return Err(format!(
                    "unknown variable '{other}': a template reads inputs, steps, run{}",
                    if scope.for_each { ", item and index" } else { "" }
                ));
            }
        }
    }
    Ok(())
}

/// A compile error without minijinja's template name (`<string>`).
pub fn describe(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(detail) = e.detail() {
        s = format!("{s}: {detail}");
    }
    if let Some(line) = e.line() {
        s = format!("{s} (line {line})");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(source: &str, expression: bool, ancestors: &[&str], for_each: bool) -> Result<(), String> {
        let ancestors: HashSet<&str> = ancestors.iter().copied().collect();
        check(
            &environment(),
            source,
            expression,
            &Scope {
                ancestors: &ancestors,
                for_each,
            },
        )
    }

    #[test]
    fn a_template_reads_inputs_run_and_its_ancestors_only() {
        assert!(
            checked(
                "{{ inputs.x }} {{ steps.a.output.items[0] }} {{ run.id }}",
                false,
                &["a"],
                false
            )
            .is_ok()
        );
        assert!(checked("steps.a.status == 'completed' and inputs.go", true, &["a"], false).is_ok());
        let e = checked("{{ steps.b.output }}", false, &["a"], false).unwrap_err();
        assert!(e.contains("step 'b'"), "{e}");
        let e = checked("{{ steps.a.outptu }}", false, &["a"], false).unwrap_err();
        assert!(e.contains("'outptu'"), "{e}");
        let e = checked("{{ secrets.token }}", false, &[], false).unwrap_err();
        assert!(e.contains("unknown variable 'secrets'"), "{e}");
        assert!(checked("{{ item.name }} #{{ index }}", false, &[], false).is_err());
        assert!(checked("{{ item.name }} #{{ index }}", false, &[], true).is_ok());
        // A loop's own variable is declared by the template.
        assert!(checked("{% for x in inputs.list %}{{ x }}{% endfor %}", false, &[], false).is_ok());
    }

    #[test]
    fn a_template_that_does_not_compile_says_where() {
        let e = checked("hello {{ inputs.x ", false, &[], false).unwrap_err();
        assert!(e.contains("syntax error"), "{e}");
        assert!(checked("inputs.x ==", true, &[], false).is_err());
    }

    #[test]
    fn command_values_are_shell_words() {
        let env = shell_environment();
        let ctx = minijinja::context! {
            name => "x'; rm -rf ~; echo '",
            n => 42,
            list => vec!["a b", "c"],
            raw => "--verbose",
        };
        let out = env
            .render_str("echo {{ name }} {{ n }} {{ list }} {{ raw | safe }}", ctx.clone())
            .unwrap();
        assert_eq!(out, r#"echo 'x'\''; rm -rf ~; echo '\''' 42 '["a b","c"]' --verbose"#);
        let run = std::process::Command::new("sh").arg("-c").arg(&out).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            "x'; rm -rf ~; echo ' 42 [\"a b\",\"c\"] --verbose\n"
        );
        // Inside the command's own quotes, the filters escape for that context.
        let hostile = r#"$(id) `id` "x" \ 'y'"#;
        let ctx = minijinja::context! { v => hostile };
        let out = env
            .render_str(r#"printf '%s|' "a {{ v | dq }} b" 'c {{ v | sq }} d'"#, ctx)
            .unwrap();
        let run = std::process::Command::new("sh").arg("-c").arg(&out).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            format!("a {hostile} b|c {hostile} d|")
        );
    }

    #[test]
    fn undefined_values_are_errors_and_files_are_out_of_reach() {
        let env = environment();
        let t = env.template_from_str("{{ inputs.missing }}").unwrap();
        assert!(
            t.render(minijinja::context! { inputs => minijinja::context! {} })
                .is_err()
        );
        // No loader and no registered template: `include` and `import` find nothing to read.
        for source in ["{% include '/etc/passwd' %}", "{% import 'x' as y %}{{ y }}"] {
            let rendered = env
                .template_from_str(source)
                .and_then(|t| t.render(minijinja::context! {}));
            assert!(rendered.is_err(), "{source}");
        }
        // A loop a member wrote runs out of fuel instead of holding the server.
        let t =
            env.template_from_str("{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}");
        assert!(t.unwrap().render(minijinja::context! {}).is_err());
    }
}
