//! `--selector.relabel-config(-file)`: which blocks of a bucket a store gateway serves or a
//! compactor handles (Thanos's flags), shared by `strata store` and `strata compact`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use strata_bucket::relabel::RelabelConfig;

use crate::exit::ConfigError;

/// The block selector flags.
#[derive(Debug, Args)]
pub struct SelectorArgs {
    /// Relabel config (YAML list) over external labels and `__block_id` choosing the blocks, e.g.
    /// a `hashmod` shard.
    #[arg(
        long = "selector.relabel-config",
        env = "STRATA_SELECTOR_RELABEL_CONFIG",
        conflicts_with = "selector_relabel_config_file"
    )]
    selector_relabel_config: Option<String>,

    /// File holding the `--selector.relabel-config` YAML.
    #[arg(
        long = "selector.relabel-config-file",
        env = "STRATA_SELECTOR_RELABEL_CONFIG_FILE"
    )]
    selector_relabel_config_file: Option<PathBuf>,
}

impl SelectorArgs {
    /// The parsed relabel config, if one was given; errors name the flag.
    pub fn relabel(&self) -> anyhow::Result<Option<RelabelConfig>> {
        let yaml = match (
            &self.selector_relabel_config,
            &self.selector_relabel_config_file,
        ) {
            (Some(y), _) => y.clone(),
            (None, Some(p)) => std::fs::read_to_string(p)
                .with_context(|| format!("read {}", p.display()))
                .context(ConfigError("--selector.relabel-config-file".into()))?,
            (None, None) => return Ok(None),
        };
        let cfg = RelabelConfig::parse(&yaml).map_err(|e| {
            anyhow::Error::new(e).context(ConfigError("--selector.relabel-config".into()))
        })?;
        Ok(Some(cfg))
    }
}
