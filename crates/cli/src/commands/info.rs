//! `davinci info`: a model's shape and size, before spending anything on it.

use anyhow::Result;
use davinci_model::Config;
use davinci_train::human;

#[derive(clap::Args)]
pub struct Args {
    /// A preset (tiny, qwen2.5-0.5b ... qwen2.5-72b), a checkpoint directory or a Hub name.
    model: String,
}

pub fn run(args: Args) -> Result<()> {
    let config = Config::resolve(&args.model)?;
    let params = config.num_parameters();
    println!(
        "layers {}, hidden {}, intermediate {}",
        config.num_hidden_layers, config.hidden_size, config.intermediate_size
    );
    println!(
        "attention: {} query heads, {} key/value heads, head dim {}",
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim()
    );
    println!(
        "vocabulary {}, tied head: {}, rope theta {}",
        config.vocab_size, config.tie_word_embeddings, config.rope_theta
    );
    println!("parameters: {params} ({})", human::count(params as u64));
    println!("bf16 weights: {}", human::bytes(params as u64 * 2));
    Ok(())
}
