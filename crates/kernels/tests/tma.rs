//! mbarrier, TMA tensor loads and named barriers (`kernels/hopper.cuh`) under the emulation,
//! checked against the PTX ISA as transcribed here, independently of the emulation's code:
//! - "Swizzling Modes" (tensors, section 5.5): the tables of where each 16-byte chunk of a
//!   128-byte line goes for the 32, 64 and 128-byte modes, whose pattern starts on a
//!   256, 512, 1024-byte boundary of shared memory (a tile elsewhere starts mid-pattern);
//! - "Out of Boundary Access": elements of the box outside the tensor are zeros;
//! - mbarrier phases: a phase completes when its arrivals and its bytes are in; a wait on a
//!   parity returns once the phase of that parity completed;
//! - bar.sync / bar.arrive on named barriers, reused round after round.
//!
//! And what the emulation adds so that a missing wait fails: a tile holds NaN until a wait
//! returns for its copy. The misuses it stops on run in a child process each.

use std::process::Command;

use davinci_kernels::emulated::{
    named_handover, tma_box, tma_early_read, tma_misuse, tma_pipeline, Bf16, Host, Misuse,
};
use davinci_kernels::launch::{Buffer, Element, Executor, Launch};
use davinci_kernels::tensor_map::{Swizzle, TensorMapError, TensorMapSpec, EMULATED_MAGIC};
use half::bf16;

/// Distinct, exactly representable bf16 values, none of them zero or NaN.
fn tensor(len: usize) -> Vec<Bf16> {
    (0..len).map(|i| bf16::from_f32(1.0 + (i % 251) as f32 + (i / 251) as f32 / 256.0).to_bits()).collect()
}

/// The destination layouts of the ISA's swizzle tables: row r of a mode's table lists the
/// source chunks (16 bytes each) that positions 0..8 of the r-th 128-byte line of the
/// pattern hold.
const SWIZZLE_32: [[usize; 8]; 2] = [[0, 1, 2, 3, 4, 5, 6, 7], [1, 0, 3, 2, 5, 4, 7, 6]];
const SWIZZLE_64: [[usize; 8]; 4] =
    [[0, 1, 2, 3, 4, 5, 6, 7], [1, 0, 3, 2, 5, 4, 7, 6], [2, 3, 0, 1, 6, 7, 4, 5], [3, 2, 1, 0, 7, 6, 5, 4]];
const SWIZZLE_128: [[usize; 8]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7],
    [1, 0, 3, 2, 5, 4, 7, 6],
    [2, 3, 0, 1, 6, 7, 4, 5],
    [3, 2, 1, 0, 7, 6, 5, 4],
    [4, 5, 6, 7, 0, 1, 2, 3],
    [5, 4, 7, 6, 1, 0, 3, 2],
    [6, 7, 4, 5, 2, 3, 0, 1],
    [7, 6, 5, 4, 3, 2, 1, 0],
];

/// The shared address where the byte at `address` of the dense box lands.
fn swizzled(address: u32, swizzle: Swizzle) -> u32 {
    let table: &[[usize; 8]] = match swizzle {
        Swizzle::None => return address,
        Swizzle::B32 => &SWIZZLE_32,
        Swizzle::B64 => &SWIZZLE_64,
        Swizzle::B128 => &SWIZZLE_128,
    };
    let line = address / 128;
    let row = &table[line as usize % table.len()];
    let chunk = (address % 128 / 16) as usize;
    let position = row.iter().position(|&c| c == chunk).expect("each chunk has a place") as u32;
    line * 128 + position * 16 + address % 16
}

#[test]
fn boxes_of_an_attention_tensor_land_where_the_isa_swizzle_tables_put_them() {
    // [tokens, heads, dim] bf16, loaded 16 tokens of one head at a time; a swizzled box's rows
    // are at most the swizzle's span (16, 32, 64 elements of the 64).
    let shape = [40usize, 3, 64];
    let [tokens, heads, dim] = shape;
    let data = tensor(tokens * heads * dim);
    let rows = 16u32;
    for (swizzle, width) in
        [(Swizzle::None, 64u32), (Swizzle::B32, 16), (Swizzle::B64, 32), (Swizzle::B128, 64)]
    {
        let last_slice = (dim as u32 - width / 2) as i32; // half past the end of dim
        let corners = [
            [0, 1, 0],
            [width as i32 % 64, 2, 8],
            [0, 0, 32], // 8 tokens past the end
            [0, 1, -5], // 5 tokens before the start
            [0, 3, 0],  // a head past the end
            [last_slice, 0, 20],
            [-(width as i32) / 2, 2, 39],
        ];
        for coords in corners {
            for tile_offset in [1024usize, 1024 + 384] {
                let what = format!("{swizzle:?} box at {coords:?}, tile at {tile_offset}");
                let tile =
                    tma_box(&data, shape, [width, 1, rows], swizzle, coords, tile_offset).expect(&what);
                let mut want = vec![0xAAu8; tile.bytes.len()];
                for z in 0..rows as i64 {
                    for x in 0..width as i64 {
                        let (d, h, t) = (coords[0] as i64 + x, coords[1] as i64, coords[2] as i64 + z);
                        let inside = (0..dim as i64).contains(&d)
                            && (0..heads as i64).contains(&h)
                            && (0..tokens as i64).contains(&t);
                        let bits = if inside {
                            data[((t as usize * heads) + h as usize) * dim + d as usize]
                        } else {
                            0
                        };
                        let dense = tile.address + ((z * width as i64 + x) * 2) as u32;
                        let at = (swizzled(dense, swizzle) - tile.address) as usize;
                        want[at..at + 2].copy_from_slice(&bits.to_le_bytes());
                    }
                }
                if let Some(i) = (0..want.len()).find(|&i| tile.bytes[i] != want[i]) {
                    panic!(
                        "{what}: byte {i} holds {:#04x}, the ISA puts {:#04x} there",
                        tile.bytes[i], want[i]
                    );
                }
            }
        }
    }
}

#[test]
fn the_tile_address_is_the_offset_in_the_emulated_shared_window() {
    let data = tensor(8 * 64);
    let tile = tma_box(&data, [8, 1, 64], [64, 1, 8], Swizzle::B128, [0, 0, 0], 1024 + 128).expect("a load");
    assert_eq!(tile.address, 1024 + 128, "the emulation's window starts on a 1024-byte boundary");
}

#[test]
fn a_two_stage_pipeline_delivers_every_step_through_alternating_parities() {
    let (rows, steps) = (8usize, 7usize);
    let data = tensor(rows * steps * 2 * 64);
    let out = tma_pipeline(&data, rows, steps).expect("the pipeline runs");
    let box_bytes = rows * 64 * 2;
    for step in 0..steps {
        for head in 0..2 {
            for row in 0..rows {
                for d in 0..64 {
                    let at = step * 2 * box_bytes + head * box_bytes + (row * 64 + d) * 2;
                    let got = u16::from_le_bytes([out[at], out[at + 1]]);
                    let want = data[((step * rows + row) * 2 + head) * 64 + d];
                    assert_eq!(got, want, "step {step} head {head} row {row} element {d}");
                }
            }
        }
    }
}

/// Reads a tile early (`wrong_parity`: after a wait on the wrong parity, else with no wait)
/// and checks the reader saw NaN bytes, then the box once it waited properly.
fn read_early(wrong_parity: bool) {
    let data = tensor(8 * 64);
    let read = tma_early_read(&data, 8, wrong_parity).expect("a load");
    assert!(
        read.early.iter().all(|&b| b == 0xFF),
        "the early read saw data, not the NaN of a copy in flight"
    );
    let late: Vec<Bf16> = read.late.chunks(2).map(|p| u16::from_le_bytes([p[0], p[1]])).collect();
    assert_eq!(late, data, "after the wait on parity 0 the tile holds the box");
}

#[test]
fn a_reader_that_skips_the_wait_sees_nan_and_the_data_after_it() {
    read_early(false);
}

#[test]
fn a_wait_on_the_wrong_parity_returns_before_the_data_lands() {
    // Parity 1 on a barrier in phase 0 names the phase before it, which counts as
    // completed: the wait returns at once, with the copy still in flight.
    read_early(true);
}

#[test]
fn named_barriers_hand_values_between_two_groups_round_after_round() {
    let (blocks, rounds) = (3u32, 5usize);
    let out = named_handover(blocks, rounds).expect("the handover runs");
    for block in 0..blocks as usize {
        for round in 0..rounds {
            for t in 0..64 {
                let want = ((block * rounds + round) * 1000 + t) as i32;
                assert_eq!(
                    out[(block * rounds + round) * 64 + t],
                    want,
                    "block {block} round {round} reader {t}"
                );
            }
        }
    }
}

/// A map's parts: by default one the driver accepts (a `[16, 4, 64]` bf16 tensor, boxes of
/// 8 x 1 x 64, 128-byte swizzle), which each refusal below changes in one place.
struct Parts {
    misalign: u64,
    dims: Vec<u64>,
    strides: Vec<u64>,
    boxes: Vec<u32>,
    swizzle: Swizzle,
}

/// A change to the parts of a good map.
type Change = fn(&mut Parts);

fn spec(change: Change) -> Result<TensorMapSpec, TensorMapError> {
    let data = vec![0u128; 64 * 64];
    let mut parts = Parts {
        misalign: 0,
        dims: vec![64, 4, 16],
        strides: vec![128, 512],
        boxes: vec![64, 1, 8],
        swizzle: Swizzle::B128,
    };
    change(&mut parts);
    let whole = Buffer::host(&data);
    let buffer = Buffer { addr: whole.addr + parts.misalign, bytes: whole.bytes - parts.misalign as usize };
    TensorMapSpec::new(buffer, Element::Bf16, &parts.dims, &parts.strides, &parts.boxes, parts.swizzle)
}

#[test]
fn tensor_maps_the_driver_would_refuse_are_refused_naming_the_field() {
    assert!(spec(|_| {}).is_ok(), "{:?}", spec(|_| {}));
    let refusals: [(Change, &str, &str); 10] = [
        (|p| p.misalign = 8, "address", "not 16-byte aligned"),
        (|p| p.swizzle = Swizzle::B64, "box_dims[0]", "128 bytes, wider than the 64-byte swizzle"),
        (|p| p.strides[1] = 520, "strides[1]", "multiple of 16"),
        (|p| p.boxes[1] = 0, "box_dims[1]", "1 to 256"),
        (|p| p.boxes[2] = 257, "box_dims[2]", "1 to 256"),
        (|p| p.boxes[0] = 4, "box_dims[0]", "8 bytes, not a multiple of 16"),
        (|p| p.dims[1] = 0, "dims[1]", "1 to 2^32"),
        (|p| p.strides.truncate(1), "strides", "1 entries for a rank-3 tensor, which needs 2"),
        (|p| p.dims[2] = 200, "buffer", "reaches 102400 bytes past its address"),
        (|p| p.dims = vec![1; 6], "dims", "rank 6"),
    ];
    for (change, field, why) in refusals {
        let err = spec(change).expect_err("the driver would refuse this map");
        assert_eq!(err.field(), field, "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }
}

#[test]
fn the_emulated_map_is_the_fields_of_the_spec() {
    let data = vec![0u128; 64];
    let buffer = Buffer::host(&data);
    let spec =
        TensorMapSpec::new(buffer, Element::F32, &[16, 8], &[64], &[4, 2], Swizzle::B32).expect("a map");
    let words = Host::default().tensor_map(&spec).expect("the emulation makes maps");
    let want = [
        EMULATED_MAGIC,
        buffer.addr,
        2 | 4 << 32,
        32,
        16,
        8,
        1,
        1,
        1,
        64,
        0,
        0,
        0,
        4 | 2 << 32,
        1 | 1 << 32,
        1,
    ];
    assert_eq!(words, want);
    assert_eq!(spec.box_bytes(), 4 * 2 * 4);
}

/// An executor without tensor maps (the trait's default).
struct NoMaps;

impl Executor for NoMaps {
    fn scratch(&mut self, _: usize) -> candle_core::Result<Buffer> {
        candle_core::bail!("no scratch")
    }
    fn table(&mut self, _: &[u8]) -> candle_core::Result<Buffer> {
        candle_core::bail!("no tables")
    }
    fn run(&mut self, _: &Launch) -> candle_core::Result<()> {
        Ok(())
    }
}

#[test]
fn an_executor_without_tensor_maps_says_so() {
    let data = vec![0u128; 64];
    let spec = TensorMapSpec::new(Buffer::host(&data), Element::Bf16, &[64], &[], &[64], Swizzle::None)
        .expect("a map");
    let err = NoMaps.tensor_map(&spec).expect_err("the default refuses");
    assert!(err.to_string().contains("this executor makes no tensor maps"), "{err}");
}

/// Each misuse, the message the emulation stops with.
const MISUSES: [(Misuse, &str); 10] = [
    (Misuse::WaitUninitialised, "holds no initialised mbarrier"),
    (Misuse::InitTwice, "already holds a barrier"),
    (Misuse::ArrivalPastCount, "an arrival past the count"),
    (Misuse::BytesPastExpected, "has every arrival in and expects 16 more bytes"),
    (Misuse::ForeignMap, "a tensor map the emulation did not make"),
    (Misuse::CopyOntoBarrier, "over the mbarrier at 0"),
    (Misuse::BarrierWrittenOver, "was written over"),
    (Misuse::NamedCountNotWarps, "the thread count is a multiple of 32"),
    (Misuse::NamedPartialWarps, "took part with 16 of its 32 threads"),
    (Misuse::NamedArriveTwice, "arrives a second time before the barrier completes"),
];

const MISUSE_VARIABLE: &str = "DAVINCI_TMA_MISUSE";

/// Runs the misuse `DAVINCI_TMA_MISUSE` names; started by the test below in a child process.
#[test]
#[ignore = "the misuse test runs it in a child process"]
fn misuse_in_a_child_process() {
    let Ok(index) = std::env::var(MISUSE_VARIABLE) else { return };
    let index: usize = index.parse().expect("a misuse index");
    let _ = tma_misuse(MISUSES[index].0);
}

#[test]
fn each_misuse_stops_the_emulation_with_its_message() {
    let test_binary = std::env::current_exe().expect("the test binary");
    for (index, (misuse, message)) in MISUSES.iter().enumerate() {
        let child = Command::new(&test_binary)
            .args(["--exact", "misuse_in_a_child_process", "--ignored", "--nocapture", "--test-threads=1"])
            .env(MISUSE_VARIABLE, index.to_string())
            .output()
            .expect("the child runs");
        let stderr = String::from_utf8_lossy(&child.stderr);
        assert!(!child.status.success(), "{misuse:?} ran to the end:\n{stderr}");
        assert!(stderr.contains(message), "{misuse:?} stopped without \"{message}\":\n{stderr}");
    }
}
