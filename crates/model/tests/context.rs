//! How context parallelism divides a packed row among the ranks of a group.

use davinci_model::context::{causal_work, ContextSplit, TOLERANCE};

fn cu_of(lengths: &[u32]) -> Vec<u32> {
    let mut cu = vec![0];
    for &len in lengths {
        cu.push(cu[cu.len() - 1] + len);
    }
    cu
}

/// Rows of 8K-16K tokens: one document over the whole row; documents that cross chunk
/// borders; 1-token documents; a row of many short documents; lengths from a generator.
fn rows() -> Vec<Vec<u32>> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below) as u32
    };
    let mut random = Vec::new();
    for _ in 0..6 {
        let mut row = Vec::new();
        let target = 8192 + next(8192);
        let mut used = 0;
        while used < target {
            let long = next(4) == 0;
            let len = (1 + next(if long { 6000 } else { 300 })).min(target - used);
            row.push(len);
            used += len;
        }
        random.push(row);
    }
    let mut fixed = vec![
        vec![16384],
        vec![9000, 1, 700, 1, 2500, 1, 1000, 33, 1],
        vec![1; 8192],
        vec![128; 96],
        vec![4095, 4097, 1, 3000, 5000],
    ];
    fixed.extend(random);
    fixed
}

#[test]
fn every_token_of_the_row_is_on_exactly_one_rank_at_its_position_in_its_document() {
    for lengths in rows() {
        let cu = cu_of(&lengths);
        for ranks in [2, 3, 4, 8] {
            let split = ContextSplit::new(&cu, ranks);
            let mut seen = vec![0u32; *cu.last().unwrap() as usize];
            for rank in 0..ranks {
                let pieces = split.pieces(rank);
                assert!(pieces.windows(2).all(|w| (w[0].doc, w[0].start) < (w[1].doc, w[1].start)));
                for p in pieces {
                    assert!(
                        p.len > 0 && p.start + p.len <= lengths[p.doc],
                        "{p:?} in a document of {}",
                        lengths[p.doc]
                    );
                    for t in 0..p.len {
                        seen[(cu[p.doc] + p.start + t) as usize] += 1;
                    }
                }
            }
            assert!(
                seen.iter().all(|&n| n == 1),
                "{ranks} ranks: a token held {:?} times",
                seen.iter().max()
            );
            let owners = split.owners();
            let held: usize = (0..ranks).map(|r| split.tokens(r)).sum();
            assert_eq!(held, owners.len());
        }
    }
}

#[test]
fn the_busiest_rank_holds_an_even_share_of_tokens_and_attention_work_within_two_percent() {
    for lengths in rows() {
        let cu = cu_of(&lengths);
        for ranks in [2, 4, 8] {
            let balance = ContextSplit::new(&cu, ranks).balance();
            let even = 1.0 / ranks as f64;
            let what = format!("{} documents, {ranks} ranks: {balance:?}", lengths.len());
            assert!(balance.tokens <= even * (1.0 + TOLERANCE) + 1e-12, "tokens, {what}");
            assert!(balance.work <= even * (1.0 + TOLERANCE) + 1e-12, "work, {what}");
        }
    }
}

#[test]
fn short_documents_stay_whole_when_the_row_balances_without_cutting_them() {
    let lengths = vec![128u32; 96];
    let split = ContextSplit::new(&cu_of(&lengths), 4);
    for rank in 0..4 {
        assert_eq!(split.pieces(rank).len(), 24);
        assert!(split.pieces(rank).iter().all(|p| p.start == 0 && p.len == 128));
    }
}

#[test]
fn a_long_document_is_cut_into_2n_chunks_an_early_one_paired_with_a_late_one() {
    let split = ContextSplit::new(&[0, 16000], 4);
    for rank in 0..4u32 {
        let starts: Vec<(u32, u32)> = split.pieces(rank as usize).iter().map(|p| (p.start, p.len)).collect();
        assert_eq!(starts, vec![(rank * 2000, 2000), ((7 - rank) * 2000, 2000)]);
    }
    let work: Vec<u64> = (0..4)
        .map(|r| split.pieces(r).iter().map(|p| causal_work(p.start as u64, (p.start + p.len) as u64)).sum())
        .collect();
    assert!(work.iter().all(|&w| w == work[0]), "{work:?}");
}
