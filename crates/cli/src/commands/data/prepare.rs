//! `davinci prepare`: records to tokenized shards, from a recipe or from flags.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use davinci_data::filter::{FilterConfig, Outcome, OverLength};
use davinci_data::prepare::{prepare_dataset, DatasetSpec, PrepareOptions, PrepareReport};
use davinci_data::render::{ChatMlOptions, LossScope, Template, ToolStyle};
use davinci_data::tokenize::TextTokenizer;
use davinci_train::Recipe;

use crate::args::parse_named;

#[derive(clap::Args)]
pub struct Args {
    /// A recipe: prepares every dataset it defines. Without one, the flags below describe
    /// a single dataset.
    recipe: Option<PathBuf>,
    /// With a recipe: prepare only this dataset (repeatable).
    #[arg(long)]
    only: Vec<String>,
    /// With a recipe: write the datasets under this directory instead of the recipe's data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Record files or globs (JSONL, .jsonl.gz, .jsonl.zst, SWE-agent .traj).
    #[arg(long)]
    source: Vec<String>,
    /// pr-general, pr-python, chatml or text.
    #[arg(long)]
    template: Option<String>,
    /// tokenizer.json, or a Hub model name whose tokenizer to use.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Output directory of the dataset.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Dataset name (defaults to the output directory's name).
    #[arg(long)]
    name: Option<String>,
    /// Token cap of a sample.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Truncate samples above the cap instead of dropping them.
    #[arg(long)]
    truncate: bool,
    /// Trajectories to keep: any, pass or fail.
    #[arg(long, default_value = "any")]
    outcome: String,
    /// ChatML loss: all or assistant-only.
    #[arg(long, default_value = "all")]
    loss: String,
    /// ChatML tool calls: qwen or xml-function.
    #[arg(long, default_value = "qwen")]
    tool_style: String,
    /// Keep the SWE-Bench Verified repositories (dropped by default).
    #[arg(long)]
    keep_swe_bench: bool,
    /// Fail on the first malformed record instead of skipping and counting it.
    #[arg(long)]
    strict: bool,
    /// Accept a dataset that keeps no record (by default that is an error).
    #[arg(long)]
    allow_empty: bool,
    /// The largest share of malformed records a dataset may have, from 0 to 1.
    #[arg(long, default_value_t = 0.25)]
    max_malformed_share: f64,
}

pub fn run(args: Args) -> Result<()> {
    if !(0.0..=1.0).contains(&args.max_malformed_share) {
        bail!("--max-malformed-share must be between 0 and 1, not {}", args.max_malformed_share);
    }
    let options = PrepareOptions {
        strict: args.strict,
        allow_empty: args.allow_empty,
        max_malformed_share: args.max_malformed_share,
        ..PrepareOptions::default()
    };
    let jobs: Vec<(DatasetSpec, PathBuf, PathBuf)>;
    let tokenizer_path: String;
    if let Some(recipe_path) = &args.recipe {
        let mut recipe = Recipe::from_file(recipe_path)?;
        if let Some(dir) = &args.data_dir {
            recipe.data_dir = std::env::current_dir()?.join(dir);
        }
        for name in &args.only {
            if !recipe.datasets.iter().any(|d| &d.name == name) {
                bail!("{}: no dataset named `{name}`", recipe_path.display());
            }
        }
        tokenizer_path = recipe.tokenizer_source();
        jobs = recipe
            .datasets
            .iter()
            .filter(|d| args.only.is_empty() || args.only.contains(&d.name))
            .map(|d| (d.clone(), recipe.base.clone(), recipe.dataset_dir(d)))
            .collect();
    } else {
        let (Some(template), Some(tokenizer), Some(out)) = (&args.template, &args.tokenizer, &args.out)
        else {
            bail!("give a recipe, or --source, --template, --tokenizer and --out");
        };
        if args.source.is_empty() {
            bail!("give at least one --source");
        }
        let filters = FilterConfig {
            max_tokens: args.max_tokens,
            over_length: if args.truncate { OverLength::Truncate } else { OverLength::Drop },
            outcome: parse_named::<Outcome>("outcome", &args.outcome)?,
            exclude_swe_bench_verified: !args.keep_swe_bench,
            ..FilterConfig::default()
        };
        let chatml = ChatMlOptions {
            loss: parse_named::<LossScope>("loss", &args.loss)?,
            tool_style: parse_named::<ToolStyle>("tool style", &args.tool_style)?,
        };
        let name = args
            .name
            .clone()
            .or_else(|| out.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "dataset".into());
        let spec = DatasetSpec {
            name,
            sources: args.source.clone(),
            template: parse_named::<Template>("template", template)?,
            chatml,
            filters,
        };
        tokenizer_path = tokenizer.clone();
        jobs = vec![(spec, PathBuf::from("."), out.clone())];
    }
    let tokenizer = TextTokenizer::load(&tokenizer_path)?;
    let mut total = PrepareReport::default();
    for (spec, base, out) in &jobs {
        let started = std::time::Instant::now();
        davinci_train::memory::reset_peak();
        let (_, report) = prepare_dataset(spec, base, &tokenizer, out, &options)
            .with_context(|| format!("preparing dataset `{}`", spec.name))?;
        print_report(&spec.name, &report, started.elapsed().as_secs_f64());
        // The binary counts its heap (see `davinci_train::memory`).
        println!("  peak heap: {}", davinci_train::human::bytes(davinci_train::memory::peak_bytes() as u64));
        println!("  -> {}", out.display());
        total.records += report.records;
        total.kept += report.kept;
        total.tokens += report.tokens;
        total.loss_tokens += report.loss_tokens;
    }
    if jobs.len() > 1 {
        println!(
            "all datasets: {} records, {} kept, {} tokens ({} with loss)",
            total.records, total.kept, total.tokens, total.loss_tokens
        );
    }
    Ok(())
}

fn print_report(name: &str, r: &PrepareReport, seconds: f64) {
    println!(
        "{name}: {} records, {} kept, {} tokens ({} with loss), {:.0} records/s, {:.0} tokens/s",
        r.records,
        r.kept,
        r.tokens,
        r.loss_tokens,
        r.records as f64 / seconds.max(1e-9),
        r.tokens as f64 / seconds.max(1e-9)
    );
    if r.malformed > 0 {
        println!("  malformed (skipped): {}", r.malformed);
        for example in &r.malformed_examples {
            println!("    {example}");
        }
    }
    if r.truncated > 0 {
        println!("  truncated to the token cap: {}", r.truncated);
    }
    for (reason, count) in &r.removed.0 {
        println!("  removed, {reason}: {count}");
    }
}
