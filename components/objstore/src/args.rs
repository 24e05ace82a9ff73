//! The `--objstore.config-file` / `--objstore.config` flags every bucket-using component shares.

use std::path::PathBuf;

use crate::config::BucketConfig;
use crate::error::ConfigError;

/// Object storage flags, flattened into a component's `Args`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ObjstoreArgs {
    /// Path to a Thanos objstore YAML file (type: S3|GCS|AZURE|FILESYSTEM, config: …, prefix: …).
    #[arg(
        long = "objstore.config-file",
        env = "STRATA_OBJSTORE_CONFIG_FILE",
        conflicts_with = "config"
    )]
    pub config_file: Option<PathBuf>,

    /// The Thanos objstore YAML itself, instead of a file.
    #[arg(long = "objstore.config", env = "STRATA_OBJSTORE_CONFIG")]
    pub config: Option<String>,
}

impl ObjstoreArgs {
    /// Reads and parses the configuration from whichever flag is set.
    pub fn load(&self) -> Result<BucketConfig, ConfigError> {
        match (&self.config_file, &self.config) {
            (Some(_), Some(_)) => Err(ConfigError::Both),
            (None, None) => Err(ConfigError::Missing),
            (None, Some(yaml)) => BucketConfig::parse(yaml, "--objstore.config"),
            (Some(path), None) => {
                let yaml = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                BucketConfig::parse(&yaml, &path.display().to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        objstore: ObjstoreArgs,
    }

    #[test]
    fn inline_and_file_and_errors() {
        let cli = Cli::try_parse_from([
            "x",
            "--objstore.config",
            "type: FILESYSTEM\nconfig:\n  directory: /tmp/b\n",
        ])
        .expect("flags");
        let c = cli.objstore.load().expect("load");
        assert_eq!(c.origin, "--objstore.config");

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bucket.yml");
        std::fs::write(&path, "type: S3\nconfig:\n  bucket: b\n  nope: 1\n").expect("write");
        let args = ObjstoreArgs {
            config_file: Some(path.clone()),
            config: None,
        };
        let msg = args.load().expect_err("unknown key").to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("nope"),
            "{msg}"
        );

        assert!(matches!(
            ObjstoreArgs::default().load(),
            Err(ConfigError::Missing)
        ));
        let missing = ObjstoreArgs {
            config_file: Some(dir.path().join("absent.yml")),
            config: None,
        };
        assert!(matches!(missing.load(), Err(ConfigError::Read { .. })));
        assert!(
            Cli::try_parse_from(["x", "--objstore.config", "a", "--objstore.config-file", "b"])
                .is_err()
        );
    }
}
