//! Context parallelism against one rank: rows of 8K tokens (one document over a whole row;
//! documents that cross chunk borders; 1-token documents) give the loss and every
//! parameter's gradient of a single rank at data x context = 1x2, 2x2 and 1x4, over the
//! thread and the TCP backends.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use candle_core::Tensor;
use common::{collect_grads, max_rel, model_fixture};
use davinci_data::loader::{Batch, IGNORE};
use davinci_dist::tcp::TcpRank;
use davinci_dist::threads::thread_group;
use davinci_dist::{Collective, JobSecret};
use davinci_model::{load_checkpoint, PackedLayout, Qwen2};
use davinci_train::context::ContextGroup;

const ROW: usize = 8192;

/// Two rows: a document over the whole row, and a mix whose documents cross the chunk
/// borders of 2 and 4 ranks, with 1-token documents among them.
fn rows(vocab: u32) -> Vec<Batch> {
    let mut state = 17u64;
    [vec![ROW as u32], vec![3000, 1, 2500, 1, 1, 900, 1789]]
        .iter()
        .map(|lengths| {
            let mut batch = Batch {
                rows: 1,
                seq_len: ROW,
                cu_seqlens: vec![0],
                row_tokens: vec![ROW],
                ..Batch::default()
            };
            for &len in lengths {
                for t in 0..len {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    batch.input_ids.push((state >> 33) as u32 % vocab);
                    batch.position_ids.push(t);
                }
                batch.cu_seqlens.push(batch.input_ids.len() as u32);
            }
            // Labels: the next token within the document; every third one without loss.
            batch.labels = (0..ROW)
                .map(|t| {
                    let ends = batch.cu_seqlens.contains(&(t as u32 + 1));
                    if ends || t % 3 == 0 {
                        IGNORE
                    } else {
                        batch.input_ids[t + 1] as i64
                    }
                })
                .collect();
            batch
        })
        .collect()
}

/// Loss sum, loss tokens and gradients of the sum of token losses.
type Outcome = (f64, usize, HashMap<String, Tensor>);

fn add(total: &mut Outcome, (loss, count, grads): Outcome) {
    total.0 += loss;
    total.1 += count;
    for (name, grad) in grads {
        let sum = match total.2.remove(&name) {
            Some(previous) => (previous + grad).unwrap(),
            None => grad,
        };
        total.2.insert(name, sum);
    }
}

/// One rank's part: the rows of its context group, each split over the group.
fn rank_step(model: &Qwen2, world: Arc<dyn Collective>, context: usize, batches: &[Batch]) -> Outcome {
    let group = ContextGroup::new(&world, context).unwrap();
    let mut total = (0.0, 0, HashMap::new());
    for (i, row) in batches.iter().enumerate().filter(|(i, _)| i % group.data_ranks == group.data_rank) {
        let share = group.share(row).unwrap();
        let (stats, grads) = collect_grads(model, &share.input_ids, &share.labels, &share.layout).unwrap();
        eprintln!("row {i}: rank {} of its group holds {} tokens", group.rank, share.input_ids.len());
        add(&mut total, (stats.loss_sum, stats.count, grads));
    }
    total
}

fn single_rank(model: &Qwen2, batches: &[Batch]) -> Outcome {
    let mut total = (0.0, 0, HashMap::new());
    for row in batches {
        let layout = PackedLayout::new(row.cu_seqlens.clone()).unwrap();
        let (stats, grads) = collect_grads(model, &row.input_ids, &row.labels, &layout).unwrap();
        add(&mut total, (stats.loss_sum, stats.count, grads));
    }
    total
}

fn assert_same(reference: &Outcome, got: &Outcome, what: &str) {
    assert_eq!(reference.1, got.1, "{what}: loss tokens");
    let loss_error = (reference.0 - got.0).abs() / reference.0.abs();
    assert!(loss_error < 1e-5, "{what}: loss {} vs {}", got.0, reference.0);
    assert_eq!(reference.2.len(), got.2.len(), "{what}: parameters with a gradient");
    let mut worst = 0f32;
    for (name, want) in &reference.2 {
        let error = max_rel(&got.2[name], want);
        assert!(error < 1e-5, "{what}: gradient of {name} differs by {error:e} (relative)");
        worst = worst.max(error);
    }
    eprintln!("{what}: loss within {loss_error:e}, gradients within {worst:e}");
}

/// Every layout of `world` ranks in groups of `context`, each rank a thread over `ranks`.
fn run_world(model: &Qwen2, ranks: Vec<Arc<dyn Collective>>, context: usize, batches: &[Batch]) -> Outcome {
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = ranks
            .into_iter()
            .map(|world| scope.spawn(move || rank_step(model, world, context, batches)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total = (0.0, 0, HashMap::new());
    outcomes.into_iter().for_each(|o| add(&mut total, o));
    total
}

fn model() -> Qwen2 {
    load_checkpoint(&model_fixture("gqa-untied"), &candle_core::Device::Cpu, Some(candle_core::DType::F32))
        .unwrap()
}

/// `world` thread ranks.
fn thread_world(world: usize) -> Vec<Arc<dyn Collective>> {
    thread_group(world, Duration::from_secs(300))
        .into_iter()
        .map(|r| Arc::new(r) as Arc<dyn Collective>)
        .collect()
}

/// `world` TCP ranks on this host, connected.
fn tcp_world(world: usize) -> Vec<Arc<dyn Collective>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let secret = JobSecret::random().unwrap();
    let timeout = Duration::from_secs(300);
    let connecting: Vec<_> = (0..world)
        .map(|rank| {
            let (addr, secret) = (addr.clone(), secret.clone());
            std::thread::spawn(move || TcpRank::connect(&addr, rank, world, "fingerprint", &secret, timeout))
        })
        .collect();
    connecting.into_iter().map(|h| Arc::new(h.join().unwrap().unwrap()) as Arc<dyn Collective>).collect()
}

/// Data x context = 1x2, 2x2 and 1x4 on worlds from `world_of`, against one rank.
fn every_grid_matches_one_rank(backend: &str, world_of: fn(usize) -> Vec<Arc<dyn Collective>>) {
    let model = model();
    let batches = rows(model.config().vocab_size as u32);
    let reference = single_rank(&model, &batches);
    for (data, context) in [(1, 2), (2, 2), (1, 4)] {
        let got = run_world(&model, world_of(data * context), context, &batches);
        assert_same(&reference, &got, &format!("{backend}, data x context = {data}x{context}"));
    }
}

#[test]
fn context_degrees_2_and_4_over_threads_give_the_gradients_of_one_rank() {
    every_grid_matches_one_rank("threads", thread_world);
}

#[test]
fn context_degrees_2_and_4_over_tcp_give_the_gradients_of_one_rank() {
    every_grid_matches_one_rank("TCP", tcp_world);
}
