//! `wgmma.mma_async` (`kernels/hopper.cuh`) under the emulation, checked thread by thread
//! and register by register against NVIDIA's PTX ISA, transcribed here from the document
//! independently of the emulation's code:
//! - "Canonical Layouts" (section 9.7.15.5.1.2.1.3): where element (m or n, k) of A and B
//!   lies in shared memory for each major-ness and swizzle mode, in CuTe notation there
//!   (shape : stride in elements, T = 8 bf16 elements to 16 bytes), followed by the
//!   `Swizzle<B, 4, 3>` of the mode on the address; the descriptor's bits from "Matrix
//!   Descriptor Format" (9.7.15.5.1.2.2);
//! - "WGMMA .m64nNk16 register fragment layout" for the accumulators D and for A from
//!   registers (CUTLASS's `CLayout_64xN` and `ALayout_64x16`).
//!
//! A and B hold small integers, so every product and sum is exact in f32 and the results can
//! be compared exactly; the rest of shared memory holds NaN bytes, so an element read from
//! the wrong place shows. Then the asynchrony: accumulators read before their wait are NaN.

use std::process::Command;

use davinci_kernels::emulated::{
    wgmma_read_before_wait, wgmma_rs, wgmma_ss, wgmma_ss_chain, wgmma_without_proxy_fence, Accumulators,
    Wgmma, WARPGROUP,
};
use half::bf16;

/// bf16 elements in 16 bytes: the ISA's T.
const T: usize = 8;
const IMAGE_BYTES: usize = 32 * 1024;
/// Where B starts in the image (A starts at 0).
const B_START: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Major {
    K,
    Mn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Swizzle {
    None,
    B32,
    B64,
    B128,
}

impl Swizzle {
    const ALL: [Swizzle; 4] = [Swizzle::None, Swizzle::B32, Swizzle::B64, Swizzle::B128];

    /// The descriptor's bits 62-63.
    fn mode(self) -> u64 {
        match self {
            Swizzle::None => 0,
            Swizzle::B128 => 1,
            Swizzle::B64 => 2,
            Swizzle::B32 => 3,
        }
    }

    /// B of the mode's `Swizzle<B, 4, 3>`; the span is 2^B 16-byte units.
    fn bits(self) -> u32 {
        match self {
            Swizzle::None => 0,
            Swizzle::B32 => 1,
            Swizzle::B64 => 2,
            Swizzle::B128 => 3,
        }
    }

    fn units(self) -> usize {
        1 << self.bits()
    }

    /// CuTe's `Swizzle<B, 4, 3>` on a byte address: bits 4.. XOR bits 7.., B of them.
    fn apply(self, address: usize) -> usize {
        let mask = ((1usize << self.bits()) - 1) << 4;
        address ^ ((address >> 3) & mask)
    }
}

/// An operand in shared memory: its layout and the descriptor's byte offsets.
#[derive(Debug, Clone, Copy)]
struct Placement {
    major: Major,
    swizzle: Swizzle,
    start: usize,
    lbo: usize,
    sbo: usize,
}

impl Placement {
    /// The byte (from the image's start) of element (mn, k): the canonical layout's offset
    /// in elements, times 2, from the start address, swizzled.
    ///   K-major:  ((8, m), (T, 2k)) : ((uT, SBO), (1, T)), without swizzle ((T, SBO), (1, LBO))
    ///   MN-major: ((T, u, m), (8, k)) : ((1, T, LBO), (uT, SBO)),
    ///             without swizzle ((T, 1, m), (8, k)) : ((1, T, SBO), (T, LBO))
    /// with u the swizzle's 16-byte units (1 without swizzle) and LBO, SBO in elements.
    fn byte(&self, mn: usize, k: usize) -> usize {
        let (u, lbo, sbo) = (self.swizzle.units(), self.lbo / 2, self.sbo / 2);
        let elements = match (self.major, self.swizzle) {
            (Major::K, Swizzle::None) => (mn % 8) * T + (mn / 8) * sbo + (k % T) + (k / T) * lbo,
            (Major::K, _) => (mn % 8) * u * T + (mn / 8) * sbo + (k % T) + (k / T) * T,
            (Major::Mn, Swizzle::None) => (mn % T) + (mn / T) * sbo + (k % 8) * T + (k / 8) * lbo,
            (Major::Mn, _) => {
                (mn % T) + (mn / T % u) * T + (mn / (T * u)) * lbo + (k % 8) * u * T + (k / 8) * sbo
            }
        };
        self.swizzle.apply(self.start + 2 * elements)
    }

    /// Bits 0-13 the start address >> 4, 16-29 LBO >> 4, 32-45 SBO >> 4, 62-63 the mode.
    fn descriptor(&self) -> u64 {
        (self.start as u64 >> 4)
            | ((self.lbo as u64 >> 4) << 16)
            | ((self.sbo as u64 >> 4) << 32)
            | (self.swizzle.mode() << 62)
    }

    /// Operand rows (M or N) packed as tightly as the layout allows, with LBO and SBO both
    /// in use where the layout has them (and 16, the ISA's "assumed 1", where it does not).
    fn packed(major: Major, swizzle: Swizzle, rows: usize, start: usize) -> Self {
        let w = 16 * swizzle.units();
        let (lbo, sbo) = match (major, swizzle) {
            (Major::K, Swizzle::None) => (rows / 8 * 128, 128),
            (Major::K, _) => (16, 8 * w),
            (Major::Mn, Swizzle::None) => (rows / 8 * 128, 128),
            (Major::Mn, _) => (16 * w, 8 * w),
        };
        Self { major, swizzle, start, lbo, sbo }
    }
}

/// A small integer for element `i` of matrix `seed`: -8..=8, exact in bf16.
fn small(seed: usize, i: usize) -> f32 {
    let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (seed as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    ((h >> 40) % 17) as f32 - 8.0
}

/// A shared-memory image: NaN bytes but where operands were placed.
struct Image {
    bytes: Vec<u8>,
    taken: Vec<bool>,
}

impl Image {
    fn new() -> Self {
        Self { bytes: vec![0xFF; IMAGE_BYTES], taken: vec![false; IMAGE_BYTES] }
    }

    /// Writes `rows x depth` elements (`value(mn, k)`) where `p` puts them.
    fn place(&mut self, p: &Placement, rows: usize, depth: usize, value: impl Fn(usize, usize) -> f32) {
        for mn in 0..rows {
            for k in 0..depth {
                let at = p.byte(mn, k);
                assert!(!self.taken[at], "{p:?}: ({mn}, {k}) lands on a byte already taken");
                self.taken[at] = true;
                self.bytes[at..at + 2].copy_from_slice(&bf16::from_f32(value(mn, k)).to_le_bytes());
            }
        }
    }
}

/// A (64 x depth) and B (depth x n) of small integers, row-major, and C (64 x n).
struct Problem {
    n: usize,
    depth: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Problem {
    fn new(n: usize, depth: usize) -> Self {
        Self {
            n,
            depth,
            a: (0..64 * depth).map(|i| small(1, i)).collect(),
            b: (0..depth * n).map(|i| small(2, i)).collect(),
            c: (0..64 * n).map(|i| small(3, i) * 16.0).collect(),
        }
    }

    /// The image with A and B where `a` and `b` put them.
    fn image(&self, a: &Placement, b: &Placement) -> Vec<u8> {
        let mut image = Image::new();
        image.place(a, 64, self.depth, |m, k| self.a[m * self.depth + k]);
        image.place(b, self.n, self.depth, |n, k| self.b[k * self.n + n]);
        image.bytes
    }

    /// A B (+ C), 64 x n row-major.
    fn product(&self, accumulate: bool) -> Vec<f32> {
        let (n, depth) = (self.n, self.depth);
        (0..64 * n)
            .map(|i| {
                let (m, col) = (i / n, i % n);
                let sum: f32 = (0..depth).map(|k| self.a[m * depth + k] * self.b[k * n + col]).sum();
                if accumulate {
                    sum + self.c[i]
                } else {
                    sum
                }
            })
            .collect()
    }

    /// C as each thread's accumulators.
    fn c_registers(&self) -> Vec<f32> {
        (0..WARPGROUP)
            .flat_map(|t| (0..self.n / 2).map(move |r| d_position(t, r)))
            .map(|(row, col)| self.c[row * self.n + col])
            .collect()
    }
}

/// (row, col) of thread t's accumulator d_r: CLayout_64xN, thread (4, 8, 4) : (2 cols,
/// 1 row, 16 rows), value (2, 2, N / 8) : (1 col, 8 rows, 8 cols).
fn d_position(t: usize, r: usize) -> (usize, usize) {
    let (t0, t1, t2) = (t % 4, t / 4 % 8, t / 32);
    let (v0, v1, v2) = (r % 2, r / 2 % 2, r / 4);
    (t1 + 16 * t2 + 8 * v1, 2 * t0 + v0 + 8 * v2)
}

/// (row, k) of element a_e (e in 0..8) of thread t's A fragment: ALayout_64x16 is
/// CLayout_64x16, k for the column; a_2j and a_2j+1 share register j, a_2j in its low half.
fn a_position(t: usize, e: usize) -> (usize, usize) {
    d_position(t, e)
}

/// Every thread's every register against `want` (64 x n) at its (row, col).
fn assert_registers(got: &Accumulators, want: &[f32], case: &str) {
    for t in 0..WARPGROUP {
        for (r, &value) in got.thread(t).iter().enumerate() {
            let (row, col) = d_position(t, r);
            let expected = want[row * got.n + col];
            assert!(
                value == expected,
                "{case}: thread {t} d{r} (row {row}, col {col}) is {value}, not {expected}"
            );
        }
    }
}

/// Whether any register differs from `want` (NaN differs from everything).
fn any_differs(got: &Accumulators, want: &[f32]) -> bool {
    (0..WARPGROUP).any(|t| {
        got.thread(t).iter().enumerate().any(|(r, &value)| {
            let (row, col) = d_position(t, r);
            value != want[row * got.n + col]
        })
    })
}

fn op(n: usize, a: &Placement, b: &Placement, accumulate: bool) -> Wgmma {
    Wgmma {
        n,
        a_desc: a.descriptor(),
        b_desc: b.descriptor(),
        trans_a: a.major == Major::Mn,
        trans_b: b.major == Major::Mn,
        accumulate,
    }
}

/// One wgmma of `problem` with A and B placed so, checked register by register.
fn check_ss(problem: &Problem, a: &Placement, b: &Placement, case: &str) {
    let image = problem.image(a, b);
    let got = wgmma_ss(&image, op(problem.n, a, b, true), &problem.c_registers()).unwrap();
    assert_registers(&got, &problem.product(true), case);
}

fn k_major(swizzle: Swizzle, start: usize, sbo: usize) -> Placement {
    Placement { major: Major::K, swizzle, start, lbo: 16, sbo }
}

/// A and B K-major with 128-byte swizzle, packed: the layout TMA tiles have.
fn k_major_128() -> (Placement, Placement) {
    (k_major(Swizzle::B128, 0, 1024), k_major(Swizzle::B128, B_START, 1024))
}

#[test]
fn k_major_a_and_b_with_128_byte_swizzle_follow_the_ptx_layout() {
    for n in [32, 64, 128] {
        // B's groups of 8 rows a swizzle pattern apart, or two.
        let b_sbo = if n == 128 { 1024 } else { 2048 };
        let (a, b) = (k_major(Swizzle::B128, 0, 1024), k_major(Swizzle::B128, B_START, b_sbo));
        check_ss(&Problem::new(n, 16), &a, &b, &format!("n {n}"));
    }
}

#[test]
fn k_major_a_and_b_with_64_byte_swizzle_follow_the_ptx_layout() {
    let (a, b) = (k_major(Swizzle::B64, 0, 512), k_major(Swizzle::B64, B_START, 1024));
    check_ss(&Problem::new(64, 16), &a, &b, "64B");
}

#[test]
fn k_major_a_and_b_with_32_byte_swizzle_follow_the_ptx_layout() {
    let (a, b) = (k_major(Swizzle::B32, 0, 256), k_major(Swizzle::B32, B_START, 512));
    check_ss(&Problem::new(64, 16), &a, &b, "32B");
}

#[test]
fn k_major_a_and_b_without_swizzle_are_core_matrices_lbo_apart_along_k_and_sbo_apart_along_mn() {
    // A: the 8 first-K core matrices, then the 8 second-K ones; B: the two K halves of each
    // group of 8 rows side by side.
    let a = Placement { major: Major::K, swizzle: Swizzle::None, start: 0, lbo: 1024, sbo: 128 };
    let b = Placement { major: Major::K, swizzle: Swizzle::None, start: B_START, lbo: 128, sbo: 256 };
    check_ss(&Problem::new(64, 16), &a, &b, "no swizzle");
}

#[test]
fn n_major_b_with_128_byte_swizzle_has_spans_lbo_apart_along_n_and_k_groups_sbo_apart() {
    // N = 128 is two spans of 64 elements; k 8..15 are the second group of 8 K rows.
    let a = k_major(Swizzle::B128, 0, 1024);
    let b = Placement { major: Major::Mn, swizzle: Swizzle::B128, start: B_START, lbo: 2048, sbo: 1024 };
    check_ss(&Problem::new(128, 16), &a, &b, "N-major B");
}

#[test]
fn m_major_a_with_128_byte_swizzle_follows_the_ptx_layout() {
    // M = 64 is one span, so LBO goes unused: 16, as for K-major.
    let a = Placement { major: Major::Mn, swizzle: Swizzle::B128, start: 0, lbo: 16, sbo: 1024 };
    check_ss(&Problem::new(64, 16), &a, &k_major(Swizzle::B128, B_START, 1024), "M-major A");
}

#[test]
fn every_major_ness_of_a_and_b_in_every_swizzle_mode_follows_the_ptx_layout() {
    let problem = Problem::new(64, 16);
    for swizzle in Swizzle::ALL {
        for a_major in [Major::K, Major::Mn] {
            for b_major in [Major::K, Major::Mn] {
                let a = Placement::packed(a_major, swizzle, 64, 0);
                let b = Placement::packed(b_major, swizzle, 64, B_START);
                check_ss(&problem, &a, &b, &format!("{swizzle:?}, A {a_major:?}-major, B {b_major:?}-major"));
            }
        }
    }
}

#[test]
fn two_wgmmas_chained_in_one_group_step_k_by_moving_the_start_address_32_bytes_into_swizzled_rows() {
    // K = 32 in the canonical K-major layout (2k = 4 chunks of a row); the second wgmma's
    // descriptors start 32 bytes on, inside the rows, and it accumulates onto the first's
    // result still in flight. The first does not accumulate: C's values are not in it.
    let problem = Problem::new(64, 32);
    for (swizzle, sbo) in [(Swizzle::B128, 1024), (Swizzle::B64, 512)] {
        let (a, b) = (k_major(swizzle, 0, sbo), k_major(swizzle, B_START, sbo));
        let image = problem.image(&a, &b);
        let got = wgmma_ss_chain(&image, op(64, &a, &b, false), 2, 32, 32, &problem.c_registers()).unwrap();
        assert_registers(&got, &problem.product(false), &format!("{swizzle:?}"));
    }
}

#[test]
fn a_from_registers_follows_the_fragment_layout_for_every_n() {
    for n in [32, 64, 128] {
        let problem = Problem::new(n, 16);
        let fragments: [[u32; 4]; WARPGROUP] = std::array::from_fn(|t| {
            std::array::from_fn(|j| {
                let bits = |e| {
                    let (row, k) = a_position(t, e);
                    bf16::from_f32(problem.a[row * 16 + k]).to_bits() as u32
                };
                bits(2 * j) | bits(2 * j + 1) << 16
            })
        });
        for b_major in [Major::K, Major::Mn] {
            // A goes into the image as well, where the wgmma does not read it.
            let a = k_major(Swizzle::B128, 0, 1024);
            let b = Placement::packed(b_major, Swizzle::B128, n, B_START);
            let image = problem.image(&a, &b);
            let got = wgmma_rs(&image, &fragments, op(n, &a, &b, true), &problem.c_registers()).unwrap();
            assert_registers(&got, &problem.product(true), &format!("n {n}, B {b_major:?}-major"));
        }
    }
}

#[test]
fn without_accumulate_the_old_accumulators_are_ignored_and_with_it_added() {
    let problem = Problem::new(64, 16);
    let (a, b) = k_major_128();
    let image = problem.image(&a, &b);
    for accumulate in [false, true] {
        let got = wgmma_ss(&image, op(64, &a, &b, accumulate), &problem.c_registers()).unwrap();
        assert_registers(&got, &problem.product(accumulate), &format!("accumulate {accumulate}"));
    }
}

/// Runs `problem` with the data placed by `a`, `b` but the descriptors of `a_read`,
/// `b_read`, and says whether the result differs from the product.
fn misread(
    problem: &Problem,
    (a, b): (Placement, Placement),
    (a_read, b_read): (Placement, Placement),
) -> bool {
    let image = problem.image(&a, &b);
    let got = wgmma_ss(&image, op(problem.n, &a_read, &b_read, true), &problem.c_registers()).unwrap();
    any_differs(&got, &problem.product(true))
}

#[test]
fn a_wrong_stride_byte_offset_reads_other_elements() {
    let problem = Problem::new(64, 16);
    let placed = k_major_128();
    let wrong_a = (k_major(Swizzle::B128, 0, 2048), placed.1);
    assert!(misread(&problem, placed, wrong_a), "A read with twice its SBO gave the product");
    assert!(!misread(&problem, placed, placed), "the right descriptors must give the product");
}

#[test]
fn n_major_b_read_with_its_leading_and_stride_offsets_swapped_reads_other_elements() {
    let problem = Problem::new(128, 16);
    let a = k_major(Swizzle::B128, 0, 1024);
    let b = Placement { major: Major::Mn, swizzle: Swizzle::B128, start: B_START, lbo: 2048, sbo: 1024 };
    let swapped = Placement { lbo: b.sbo, sbo: b.lbo, ..b };
    assert!(misread(&problem, (a, b), (a, swapped)), "N-major B with LBO and SBO swapped gave the product");
}

#[test]
fn data_laid_out_for_128_byte_swizzle_read_as_64_byte_swizzle_differs() {
    let problem = Problem::new(64, 16);
    let placed = k_major_128();
    let as_64 = (Placement { swizzle: Swizzle::B64, ..placed.0 }, placed.1);
    assert!(misread(&problem, placed, as_64), "128B-swizzled A read as 64B gave the product");
    let k_as_mn = (placed.0, Placement { major: Major::Mn, ..placed.1 });
    assert!(misread(&problem, placed, k_as_mn), "K-major B read as N-major gave the product");
}

/// The image and C of `wgmma_read_before_wait`'s m64n32k16.
fn unwaited(write_in_flight: bool) -> (Problem, [Accumulators; 3], [Accumulators; 3]) {
    let problem = Problem::new(32, 16);
    let (a, b) = k_major_128();
    let image = problem.image(&a, &b);
    let got = wgmma_read_before_wait(
        &image,
        a.descriptor(),
        b.descriptor(),
        &problem.c_registers(),
        write_in_flight,
    )
    .unwrap();
    let [first_0, second_0] = got.before_wait;
    let [first_1, second_1] = got.after_wait_1;
    let [first_2, second_2] = got.after_wait_0;
    (problem, [first_0, first_1, first_2], [second_0, second_1, second_2])
}

fn all_nan(got: &Accumulators) -> bool {
    got.values.iter().all(|v| v.is_nan())
}

#[test]
fn reading_accumulators_before_the_wait_gives_nan() {
    let (problem, first, second) = unwaited(false);
    assert!(all_nan(&first[0]) && all_nan(&second[0]), "accumulators in flight must read as NaN");
    assert_registers(&first[2], &problem.product(true), "the first group after wait_group 0");
    assert_registers(&second[2], &problem.product(false), "the second group after wait_group 0");
}

#[test]
fn wait_group_1_lands_the_older_group_and_leaves_the_newest_in_flight() {
    let (problem, first, second) = unwaited(false);
    assert_registers(&first[1], &problem.product(true), "the older group after wait_group 1");
    assert!(all_nan(&second[1]), "the newest group must still be in flight after wait_group 1");
}

/// Set in the child process that runs a case which must stop the process.
const CHILD: &str = "DAVINCI_WGMMA_TEST_CHILD";

/// One m64n64k16 over packed K-major 128B-swizzled operands with the descriptors or flags
/// `change` makes (in a child process: a case that stops it).
fn run_changed(change: impl FnOnce(Wgmma) -> Wgmma) {
    let problem = Problem::new(64, 16);
    let (a, b) = k_major_128();
    let image = problem.image(&a, &b);
    let _ = wgmma_ss(&image, change(op(64, &a, &b, true)), &problem.c_registers());
}

/// Runs `case`, which must stop the process, in a child process (this test binary running
/// only the test `name`, which calls this again there), and checks the child's stderr says
/// `message`.
fn stops_saying(name: &str, case: impl FnOnce(), message: &str) {
    if std::env::var_os(CHILD).is_some() {
        case();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("running the test binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{name} was to stop the process; stderr:\n{stderr}");
    assert!(stderr.contains(message), "{name}: no \"{message}\" in its stderr:\n{stderr}");
}

#[test]
fn writing_accumulators_while_in_flight_stops_the_process_at_the_wait() {
    stops_saying(
        "writing_accumulators_while_in_flight_stops_the_process_at_the_wait",
        || drop(unwaited(true)),
        "wrote accumulator 0 while a wgmma on it was in flight",
    );
}

#[test]
fn a_descriptor_past_shared_memory_stops_the_process_naming_the_address() {
    // The image ends at 32 KB and shared memory 1 KB later; B starts 2 KB past it.
    let outside = k_major(Swizzle::B128, IMAGE_BYTES + 2048, 1024);
    stops_saying(
        "a_descriptor_past_shared_memory_stops_the_process_naming_the_address",
        || run_changed(|op| Wgmma { b_desc: outside.descriptor(), ..op }),
        "reads B's element (0, 0) at shared address 34816 (0x8800)",
    );
}

#[test]
fn a_nonzero_base_offset_stops_the_process() {
    stops_saying(
        "a_nonzero_base_offset_stops_the_process",
        || run_changed(|op| Wgmma { a_desc: op.a_desc | 1u64 << 49, ..op }),
        "has base offset 1",
    );
}

/// The threads' stores of the operands reach wgmma (the async proxy) only after each
/// writer's fence.proxy.async: without it the emulation stops at the wgmma, naming a writer.
/// (Every other test stages its image with the fence.)
#[test]
fn operands_stored_without_a_proxy_fence_stop_the_process_at_the_wgmma() {
    stops_saying(
        "operands_stored_without_a_proxy_fence_stop_the_process_at_the_wgmma",
        || {
            let problem = Problem::new(32, 16);
            let (a, b) = k_major_128();
            let image = problem.image(&a, &b);
            drop(wgmma_without_proxy_fence(&image, a.descriptor(), b.descriptor()));
        },
        "without fence.proxy.async after it",
    );
}
