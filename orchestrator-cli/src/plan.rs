//! Reading plan files: a job spec in YAML or JSON, the same format as the
//! API's request body.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use orchestrator_core::JobSpec;

use crate::error::CliError;

/// A parsed plan and the name to report it by.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The spec.
    pub(crate) spec: JobSpec,
    /// The file as the user named it (`<stdin>` for `-`).
    pub(crate) name: String,
}

/// Reads and parses the plan at `path` (`-` is standard input).
pub(crate) fn load(path: &Path) -> Result<Plan, CliError> {
    let stdin = path == Path::new("-");
    let read_err = |source| CliError::ReadPlan {
        file: path.to_path_buf(),
        source,
    };
    let text = if stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(read_err)?;
        text
    } else {
        std::fs::read_to_string(path).map_err(read_err)?
    };
    let name = if stdin {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    };
    let spec = parse(path, &text).map_err(|error| CliError::ParsePlan {
        file: PathBuf::from(&name),
        error,
    })?;
    Ok(Plan { spec, name })
}

/// Parses `text` as JSON or YAML: by the file's extension, else by its
/// first character (a JSON spec is an object).
pub(crate) fn parse(
    path: &Path,
    text: &str,
) -> Result<JobSpec, orchestrator_core::spec::ParseError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let json = match ext.as_deref() {
        Some("json") => true,
        Some("yaml" | "yml") => false,
        _ => text.trim_start().starts_with('{'),
    };
    if json {
        JobSpec::from_json(text)
    } else {
        JobSpec::from_yaml(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "name: ci\ndag_definition:\n  nodes:\n    - {id: a, type: noop}\n";
    const JSON: &str =
        r#"{"name": "ci", "dag_definition": {"nodes": [{"id": "a", "type": "noop"}]}}"#;

    #[test]
    fn format_follows_the_extension_then_the_content() {
        let yaml = parse(Path::new("p.yaml"), YAML).unwrap();
        assert_eq!(parse(Path::new("p.json"), JSON).unwrap(), yaml);
        assert_eq!(parse(Path::new("plan"), JSON).unwrap(), yaml);
        assert_eq!(parse(Path::new("plan.txt"), YAML).unwrap(), yaml);
        assert_eq!(parse(Path::new("P.YML"), YAML).unwrap(), yaml);
        // JSON is YAML too, but errors read better from the JSON parser.
        assert_eq!(parse(Path::new("p.json"), "{").unwrap_err().code, "syntax");
    }

    #[test]
    fn errors_carry_the_path_and_code() {
        let err = parse(
            Path::new("p.yaml"),
            "name: ci\ndag_definition:\n  nodes:\n    - {id: a, type: noop, depnds_on: [b]}\n",
        )
        .unwrap_err();
        assert_eq!(err.code, "unknown_field");
        assert_eq!(err.path, "/dag_definition/nodes/0/depnds_on");
    }

    #[test]
    fn load_reports_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.yaml");
        let err = load(&missing).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("missing.yaml"));

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"name": "x", "dag_definition": {"nodes": 3}}"#).unwrap();
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.json: /dag_definition/nodes: "), "{err}");
        assert!(err.ends_with("(invalid_type)"), "{err}");
    }
}
