#!/usr/bin/env python3
"""A static performance model of the CUDA kernels, from ptxas's resource report and the SASS.

Nobody here can time a GPU, so this predicts, for each kernel of `kernels/perf-bands.toml` and
each architecture (sm_80: A100 SXM, sm_90a: H100 SXM), the fraction of the device's peak the
kernel can reach, and fails when a prediction leaves the kernel's band. The maths and the
assumptions are in `docs/kernels.md` ("The static performance model"); in short:

- Occupancy: resident blocks per SM from registers, shared memory and threads.
- Tensor-core kernels: the main loop (the loop holding the most HMMAs) is read instruction by
  instruction; each instruction costs its pipe's cycles per warp on one SM sub-partition
  (SMSP). The loop's cycles per HMMA is the largest of: the tensor pipe's, the issue port's
  (one instruction a cycle), the fp32, integer and MUFU pipes', shared memory's (128 B a
  cycle per SM) and the latency of dependent HMMA chains spread over the SMSP's warps. The
  prediction is the peak's cycles per HMMA over that.
- Warp-specialised Hopper kernels (wgmma): scripts/perf_model_hopper.py.
- Memory-bound kernels: Little's law. The global bytes each warp has in flight in the main
  loop, times resident warps, against the bytes HBM needs in flight per SM (bandwidth times
  latency), times the share of the kernel's reads that are necessary.

Usage: perf_model.py [--check] [--write-docs | --check-docs] (after scripts/check_kernels.sh
has built target/kernels/*.cubin and the ptxas logs).
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import perf_model_hopper as hopper

ROOT = Path(__file__).resolve().parent.parent
BANDS = ROOT / "kernels" / "perf-bands.toml"
BUILT = ROOT / "target" / "kernels"
DOCS = ROOT / "docs" / "kernels.md"
DOCS_BEGIN = "<!-- perf-model:begin (scripts/perf_model.py --write-docs) -->"
DOCS_END = "<!-- perf-model:end -->"
# The predictions as data, embedded by `davinci` (crates/kernels/src/predicted.rs) so that
# every GPU measurement is printed beside its prediction.
PREDICTED = ROOT / "kernels" / "perf-predicted.tsv"


@dataclasses.dataclass(frozen=True)
class Arch:
    """What the model knows of one target: the chip it stands for and its limits."""

    name: str
    chip: str
    sms: int
    clock_ghz: float
    # Cycles one SMSP spends per m16n8k16 HMMA at the chip's dense bf16 peak, and per
    # mma.sync HMMA at best (on Hopper mma.sync reaches about 2/3 of the peak, which only
    # wgmma attains: FlashAttention-3's paper, section 2).
    peak_cycles_per_hmma: float
    mma_sync_cycles_per_hmma: float
    fp32_cycles: float  # per warp instruction on one SMSP: 32 lanes / fp32 lanes per SMSP
    int_cycles: float
    mufu_cycles: float
    hmma_latency: float  # cycles from an HMMA to a dependent one
    smem_bytes_per_cycle: float  # per SM
    registers: int  # per SM
    max_warps: int
    max_blocks: int
    shared_per_sm: int  # bytes usable by blocks, with 1 KB reserved per block
    hbm_gb_s: float
    memory_latency: float  # cycles, an HBM load's round trip near saturation (about twice unloaded)
    dram_efficiency: float  # the share of the data sheet's bandwidth a copy reaches


ARCHS = {
    # A100 SXM 80 GB: 312 dense bf16 TFLOP/s at 1.41 GHz on 108 SMs is 2048 flops a cycle
    # per SM, one m16n8k16 (4096 flops) every 2 cycles, so every 8 cycles on each SMSP.
    "sm_80": Arch("sm_80", "A100", 108, 1.41, 8.0, 8.0, 2.0, 2.0, 8.0, 33.0, 128.0, 65536, 64, 32,
                  164 * 1024, 2039.0, 1000.0, 0.92),
    # H100 SXM: 989 dense bf16 TFLOP/s at 1.83 GHz on 132 SMs is 4096 flops a cycle per SM,
    # every 4 cycles on each SMSP; mma.sync at 2/3 of that is every 6.
    "sm_90a": Arch("sm_90a", "H100", 132, 1.83, 4.0, 6.0, 1.0, 2.0, 8.0, 33.0, 128.0, 65536, 64, 32,
                   228 * 1024, 3350.0, 1000.0, 0.92),
}

# The pipe each SASS opcode (its base, before the first dot) occupies besides the issue port.
FP32 = {"FFMA", "FMUL", "FADD", "FMNMX", "FSEL", "FSETP", "FSWZADD", "HFMA2", "HADD2", "HMUL2"}
INTEGER = {"IMAD", "IADD3", "LOP3", "SHF", "ISETP", "SEL", "LEA", "IABS", "PRMT", "IMNMX", "VIADD",
           "VIADDMNMX", "F2FP", "FLO", "POPC", "BMSK", "SGXT", "IDP", "I2FP"}
MUFU = {"MUFU", "I2F", "F2I", "F2F", "FRND"}
# Bytes a warp moves through shared memory per instruction, by opcode and width.
WIDTH = {"128": 16, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}

INSTRUCTION = re.compile(
    r"/\*(?P<address>[0-9a-f]{4,})\*/\s+(?P<guard>@!?U?P[T0-9]+\s+)?(?P<opcode>[A-Z][A-Za-z0-9_.]*)"
    r"(?P<operands>[^;]*);")


@dataclasses.dataclass
class Instruction:
    address: int
    opcode: str
    operands: list[str]
    guarded: bool = False  # under a predicate (@P0 ...): a branch that may fall through

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]

    @property
    def modifiers(self) -> list[str]:
        return self.opcode.split(".")[1:]

    def branch_target(self) -> int | None:
        if self.base == "BRA" and self.operands:
            try:
                return int(self.operands[-1], 16)
            except ValueError:
                return None
        return None


def parse_sass(text: str) -> list[Instruction]:
    """The instructions of one function's `cuobjdump --dump-sass` listing."""
    out = []
    for match in INSTRUCTION.finditer(text):
        operands = [o.strip() for o in match["operands"].split(",") if o.strip()]
        out.append(Instruction(int(match["address"], 16), match["opcode"], operands, match["guard"] is not None))
    return out


def loops(code: list[Instruction]) -> list[tuple[int, int]]:
    """Every loop as (first index, last index): a branch back to an earlier address."""
    index = {ins.address: i for i, ins in enumerate(code)}
    found = []
    for i, ins in enumerate(code):
        target = ins.branch_target()
        if target is not None and target <= ins.address and target in index:
            found.append((index[target], i))
    return found


def main_loop(code: list[Instruction], weight, conditional: bool = False) -> tuple[int, int] | None:
    """The loop with the most of `weight` in it; of equals, the shortest (the innermost).
    With `conditional`, only loops closed by a conditional branch: ptxas puts an mbarrier
    wait's retry out of line, at the end of the function, with an unconditional branch back
    to the wait, which would otherwise read as a loop around everything in between."""
    best, best_key = None, None
    for first, last in loops(code):
        if conditional and not code[last].guarded:
            continue
        amount = sum(weight(ins) for ins in code[first:last + 1])
        if amount == 0:
            continue
        key = (amount, -(last - first))
        if best_key is None or key > best_key:
            best, best_key = (first, last), key
    return best


def steady_path(code: list[Instruction], span: tuple[int, int], work) -> list[Instruction]:
    """One pass of the loop in its steady state: of the paths from the loop's head to its
    back branch (forward edges only, so an inner loop's body counts once), the one that
    does the most `work` (a tuple per instruction, summed) with the fewest instructions.
    Boundary code a long sequence rarely runs (a segment's last rows, the diagonal's mask)
    sits on branches this path skips, while every matrix product and copy stays on it."""
    first, last = span
    leaders = {first}
    for i in range(first, last + 1):
        target = code[i].branch_target()
        if target is not None or code[i].base == "EXIT":
            leaders.add(i + 1)
        if target is not None:
            leaders.update(j for j in range(first, last + 1) if code[j].address == target)
    starts = sorted(x for x in leaders if first <= x <= last)
    blocks = [(a, (starts[n + 1] if n + 1 < len(starts) else last + 1)) for n, a in enumerate(starts)]
    block_of = {a: n for n, (a, _) in enumerate(blocks)}
    zero = tuple(0 for _ in work(code[first]))
    best: dict[int, tuple] = {0: (zero, 0, [])}  # block -> (work, -instructions, path)
    for n, (a, end) in enumerate(blocks):
        if n not in best:
            continue
        done, fewer, path = best[n]
        body = [ins for ins in code[a:end] if ins.base != "NOP"]
        done = tuple(x + sum(work(ins)[k] for ins in body) for k, x in enumerate(done))
        fewer -= len(body)
        path = path + body
        if end - 1 == last:
            final = (done, fewer, path)
            best.setdefault("end", final)
            if final[:2] > best["end"][:2]:
                best["end"] = final
            continue
        tail = code[end - 1]
        successors = []
        target = tail.branch_target()
        if target is not None and target > tail.address:
            successors += [block_of[j] for j in block_of if code[j].address == target]
        # A predicated branch, or one with a condition of its own (BRA.DIV), may fall through.
        falls_through = tail.guarded or tail.base not in ("BRA", "EXIT") or bool(tail.modifiers)
        if falls_through and end <= last:
            successors.append(block_of[end])
        for s in successors:
            if s not in best or (done, fewer) > best[s][:2]:
                best[s] = (done, fewer, path)
    if "end" not in best:
        raise ModelError("no path through the main loop")
    return best["end"][2]


def register(operand: str) -> int | None:
    match = re.match(r"-?\|?R(\d+)", operand)
    return int(match.group(1)) if match else None


def shared_bytes(ins: Instruction) -> int:
    """Bytes one warp's instruction moves through shared memory."""
    if ins.base == "LDSM":
        count = 4 if "4" in ins.modifiers else 2 if "2" in ins.modifiers else 1
        return count * 128  # 8 rows of 16 bytes per 8x8 matrix
    if ins.base in ("LDS", "STS", "LDGSTS"):
        width = next((WIDTH[m] for m in ins.modifiers if m in WIDTH), 4)
        return 32 * width
    if ins.base == "SHFL":
        return 32 * 4
    return 0


def global_load_bytes(ins: Instruction) -> int:
    """Bytes one warp's instruction asks of global memory (loads only: stores do not wait)."""
    if ins.base in ("LDG", "LDGSTS"):
        return 32 * next((WIDTH[m] for m in ins.modifiers if m in WIDTH), 4)
    return 0


@dataclasses.dataclass
class Resources:
    registers: int
    static_shared: int
    spills: int


def parse_ptxas(text: str) -> dict[str, Resources]:
    """Registers, static shared memory and spilled bytes per kernel from `ptxas -v`."""
    out, kernel, spills = {}, None, 0
    for line in text.splitlines():
        if match := re.search(r"Compiling entry function '([^']+)'", line):
            kernel, spills = match.group(1), 0
        elif match := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                                line):
            spills = sum(int(g) for g in match.groups())
        elif (match := re.search(r"Used (\d+) registers", line)) and kernel:
            smem = re.search(r"(\d+) bytes smem", line)
            out[kernel] = Resources(int(match.group(1)), int(smem.group(1)) if smem else 0, spills)
    return out


def blocks_per_sm(arch: Arch, threads: int, registers: int, shared: int) -> tuple[int, str]:
    """Resident blocks per SM and what limits them."""
    warps = -(-threads // 32)
    per_warp = -(-registers * 32 // 256) * 256  # allocated in units of 256 per warp
    limits = {
        "warps": arch.max_warps // warps,
        "registers": arch.registers // (per_warp * warps),
        "shared": arch.shared_per_sm // (shared + 1024) if shared else arch.max_blocks,
        "blocks": arch.max_blocks,
    }
    limit = min(limits, key=limits.get)
    return limits[limit], limit


@dataclasses.dataclass
class TensorFigures:
    blocks: int
    limit: str
    warps_per_smsp: float
    hmma: int
    instructions_per_hmma: float
    dependent_share: float
    shared_bytes_per_hmma: float
    mufu_per_hmma: float
    bound: str
    predicted: float


# Cycles from an instruction's issue until its result can be used, by opcode base (the
# rest: 5). Microbenchmark figures for Ampere and Hopper, rounded: fp32 and integer 4-6,
# MUFU about 20, shared loads, ldmatrix and shuffles about 30, HMMA m16n8k16 about 33.
LATENCY = {"HMMA": 33, "LDSM": 30, "LDS": 30, "SHFL": 30, "MUFU": 20, "LDG": 600, "I2F": 20, "F2I": 20,
           "F2F": 20, "LDC": 20, "S2R": 20}
STORES = {"STS", "STG", "ST", "RED", "ATOM", "ATOMS", "LDGSTS", "BAR", "BRA", "EXIT", "DEPBAR", "BSYNC", "BSSY"}
SOURCE_REGISTER = re.compile(r"(?<![U\w])R(\d+)")


def destination(ins: Instruction) -> range:
    """The registers an instruction writes (none for stores, branches and predicates)."""
    if ins.base in STORES or not ins.operands:
        return range(0)
    first = register(ins.operands[0])
    if first is None:
        return range(0)
    if ins.base == "HMMA":
        width = 4
    elif ins.base == "LDSM":
        width = 4 if "4" in ins.modifiers else 2 if "2" in ins.modifiers else 1
    elif ins.base in ("LDS", "LDG"):
        width = max(1, next((WIDTH[m] for m in ins.modifiers if m in WIDTH), 4) // 4)
    elif "64" in ins.modifiers or "WIDE" in ins.modifiers:
        width = 2
    else:
        width = 1
    return range(first, first + width)


def sources(ins: Instruction) -> list[int]:
    """The registers an instruction reads (HMMA's operands with their fragment widths)."""
    operands = ins.operands if not destination(ins) else ins.operands[1:]
    if ins.base == "HMMA" and len(ins.operands) == 4:
        widths = [4, 2, 4]
        out = []
        for operand, width in zip(operands, widths):
            if (r := register(operand)) is not None:
                out.extend(range(r, r + width))
        return out
    return [int(m) for operand in operands for m in SOURCE_REGISTER.findall(operand)]


def one_warp_cycles(body: list[Instruction]) -> float:
    """Cycles one warp alone takes per pass of the loop in steady state: instructions issue
    in order, one a cycle, each when its source registers are ready. Two passes are run and
    the second is measured, so values carried from one pass to the next count."""
    ready: dict[int, float] = {}
    clock, ends = 0.0, []
    for _ in range(2):
        for ins in body:
            clock = max([clock + 1] + [ready.get(r, 0.0) for r in sources(ins)])
            for r in destination(ins):
                ready[r] = clock + LATENCY.get(ins.base, 5)
        ends.append(clock)
    return ends[1] - ends[0]


def tensor_model(arch: Arch, code: list[Instruction], res: Resources, threads: int, shared: int) -> TensorFigures:
    span = main_loop(code, lambda ins: ins.base == "HMMA")
    if span is None:
        raise ModelError("no loop with HMMA instructions")
    body = steady_path(code, span, lambda ins: (ins.base == "HMMA", global_load_bytes(ins)))
    hmmas = [ins for ins in body if ins.base == "HMMA"]
    dependent, previous = 0, None
    for ins in hmmas:
        accumulator = register(ins.operands[3]) if len(ins.operands) > 3 else None
        if previous is not None and accumulator is not None and accumulator == previous:
            dependent += 1
        previous = register(ins.operands[0])
    n = len(hmmas)
    blocks, limit = blocks_per_sm(arch, threads, res.registers, shared + res.static_shared)
    warps_per_smsp = blocks * threads / 32 / 4
    shared_per_hmma = sum(shared_bytes(ins) for ins in body) / n
    mufu_per_hmma = sum(ins.base in MUFU for ins in body) / n
    cycles = {
        "tensor": arch.mma_sync_cycles_per_hmma,
        "issue": len(body) / n,
        "fp32": sum(ins.base in FP32 for ins in body) * arch.fp32_cycles / n,
        "integer": sum(ins.base in INTEGER for ins in body) * arch.int_cycles / n,
        "mufu": mufu_per_hmma * arch.mufu_cycles,
        "shared": shared_per_hmma * 4 / arch.smem_bytes_per_cycle,
        # One warp's dependent chains, overlapped with the SMSP's other warps.
        "latency": one_warp_cycles(body) / n / max(warps_per_smsp, 1e-9),
    }
    bound = max(cycles, key=cycles.get)
    return TensorFigures(blocks, limit, warps_per_smsp, n, len(body) / n, dependent / n, shared_per_hmma,
                         mufu_per_hmma, bound, arch.peak_cycles_per_hmma / cycles[bound])


@dataclasses.dataclass
class MemoryFigures:
    blocks: int
    limit: str
    warps: int
    bytes_per_warp: int
    in_flight: int
    needed: int
    reads: float
    predicted: float


def memory_model(arch: Arch, code: list[Instruction], res: Resources, threads: int, shared: int,
                 reads: float, min_reads: float) -> MemoryFigures:
    span = main_loop(code, global_load_bytes)
    body = steady_path(code, span, lambda ins: (global_load_bytes(ins),)) if span else code
    # A kernel whose threads each issue a fixed set of loads (no loop around its main work)
    # may still have a loop elsewhere, say a slow path: the code outside every loop counts
    # when it loads more.
    looped = {i for first, last in loops(code) for i in range(first, last + 1)}
    straight = [ins for i, ins in enumerate(code) if i not in looped]
    if sum(map(global_load_bytes, straight)) > sum(map(global_load_bytes, body)):
        body = straight
    per_warp = sum(global_load_bytes(ins) for ins in body)
    blocks, limit = blocks_per_sm(arch, threads, res.registers, shared + res.static_shared)
    warps = blocks * -(-threads // 32)
    needed = arch.hbm_gb_s * 1e9 / arch.sms / (arch.clock_ghz * 1e9) * arch.memory_latency
    in_flight = warps * per_warp
    predicted = min(1.0, in_flight / needed) * arch.dram_efficiency * min_reads / reads
    return MemoryFigures(blocks, limit, warps, per_warp, in_flight, round(needed), reads, predicted)


class ModelError(Exception):
    pass


def sass(cubin: Path, kernel: str) -> list[Instruction]:
    try:
        text = subprocess.run(["cuobjdump", "--dump-sass", "-fun", kernel, str(cubin)], check=True,
                              capture_output=True, text=True).stdout
    except FileNotFoundError as error:
        raise ModelError('cuobjdump is not on PATH: run eval "$(scripts/cuda_toolchain.sh)" first '
                         "(scripts/check_kernels.sh does)") from error
    code = parse_sass(text)
    if not code:
        raise ModelError(f"{cubin}: no SASS for kernel {kernel}")
    return code


def load_bands(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ModelError(f"{path}: {error}") from error


def evaluate(bands: dict, built: Path) -> tuple[list[dict], list[str]]:
    """Every kernel's figures per architecture, and the failures (a prediction off its band)."""
    rows, failures, predictions = [], [], {}
    logs: dict[tuple[str, str], dict[str, Resources]] = {}
    for kernel, spec in bands.get("kernel", {}).items():
        for arch_name, arch in ARCHS.items():
            if spec["source"].endswith("_sm90") and arch_name != "sm_90a":
                continue  # built for sm_90a alone
            key = (spec["source"], arch_name)
            if key not in logs:
                logs[key] = parse_ptxas((built / f"{spec['source']}.{arch_name}.log").read_text())
            if kernel not in logs[key]:
                raise ModelError(f"{BANDS.name} [kernel.{kernel}]: not in the ptxas report of {spec['source']}.cu")
            res = logs[key][kernel]
            code = sass(built / f"{spec['source']}.{arch_name}.cubin", kernel)
            shared = int(spec.get("shared", 0))
            try:
                if spec["kind"] == "tensor":
                    figures = tensor_model(arch, code, res, int(spec["threads"]), shared)
                elif spec["kind"] == "warpgroup":
                    figures = hopper.warpgroup_model(sys.modules[__name__], arch, code, int(spec["consumers"]))
                elif spec["kind"] == "memory":
                    figures = memory_model(arch, code, res, int(spec["threads"]), shared,
                                           float(spec.get("reads", 1)), float(spec.get("min_reads", 1)))
                else:
                    raise ModelError("kind must be \"tensor\", \"warpgroup\" or \"memory\"")
            except ModelError as error:
                raise ModelError(f"{BANDS.name} [kernel.{kernel}] on {arch_name}: {error}") from error
            predictions[(kernel, arch_name)] = figures.predicted
            band = spec.get(arch_name)
            rows.append({"kernel": kernel, "arch": arch, "spec": spec, "res": res, "figures": figures,
                         "band": band})
            check_band(failures, kernel, arch_name, figures.predicted, band)
    for name, spec in bands.get("combined", {}).items():
        for arch_name, arch in ARCHS.items():
            if any((part, arch_name) not in predictions for part in spec["parts"]):
                continue  # a part not built for this architecture
            # Time per counted flop: each part's computed share over its own fraction of peak.
            time = sum(float(units) / predictions[(part, arch_name)] for part, units in spec["parts"].items())
            predicted = float(spec["counted"]) / time
            band = spec.get(arch_name)
            rows.append({"kernel": name, "arch": arch, "spec": spec, "combined": predicted, "band": band})
            check_band(failures, name, arch_name, predicted, band)
    return rows, failures


def check_band(failures: list[str], kernel: str, arch: str, predicted: float, band) -> None:
    if band is None:
        failures.append(f"{kernel} {arch}: no band in {BANDS.name}")
    elif not band[0] <= predicted <= band[1]:
        failures.append(f"{kernel} {arch}: predicted {predicted:.1%} is outside its band "
                        f"{band[0]:.0%}..{band[1]:.0%} ({BANDS.name})")


def percent(band) -> str:
    return f"{band[0]:.0%}-{band[1]:.0%}" if band else "none"


def tables(rows: list[dict]) -> str:
    """The model's figures as markdown: tensor-core kernels, their sums, memory-bound kernels."""
    tensor = ["| kernel | arch | registers | shared KB | blocks/SM (limit) | warps/SMSP | HMMA in loop | "
              "instructions/HMMA | dependent HMMA | shared B/HMMA | MUFU/HMMA | bound | predicted of peak | band |",
              "|---" * 14 + "|"]
    combined = ["| kernels in sequence | arch | parts (units of work) | counted units | predicted | band |",
                "|---" * 6 + "|"]
    warpgroup = ["| kernel | arch | registers (after setmaxnreg: used/set) | shared KB | consumers | HGMMA in loop | HGMMA cycles/pass | "
                 "other instructions/warp/pass | one pass alone (cycles) | shared B/pass | bound | predicted of peak | band |",
                 "|---" * 13 + "|"]
    memory = ["| kernel | arch | registers | blocks/SM (limit) | warps/SM | load B/warp/iteration | in flight B/SM | "
              "needed B/SM | reads/needed | predicted of HBM | band |", "|---" * 11 + "|"]
    for row in rows:
        arch, band = row["arch"], percent(row["band"])
        label = f"{arch.name} ({arch.chip})"
        if "combined" in row:
            parts = ", ".join(f"{k} {v}" for k, v in row["spec"]["parts"].items())
            combined.append(f"| {row['kernel']} | {label} | {parts} | {row['spec']['counted']} | {row['combined']:.1%} "
                            f"| {band} |")
            continue
        f, res, spec = row["figures"], row["res"], row["spec"]
        if isinstance(f, hopper.WarpgroupFigures):
            budgets = ", ".join(f"{used}/{count}" for count, used in sorted(f.budgets))
            warpgroup.append(
                f"| {row['kernel']} | {label} | {res.registers} ({budgets}) | {(int(spec.get('shared', 0)) + res.static_shared) / 1024:.1f} "
                f"| {f.consumers} | {f.hgmma} | {f.hgmma_cycles:.0f} | {f.instructions} | {f.pass_cycles:.0f} "
                f"| {f.shared_bytes} | {f.bound} | {f.predicted:.1%} | {band} |")
        elif isinstance(f, TensorFigures):
            tensor.append(
                f"| {row['kernel']} | {label} | {res.registers} | {(int(spec.get('shared', 0)) + res.static_shared) / 1024:.1f} "
                f"| {f.blocks} ({f.limit}) | {f.warps_per_smsp:g} | {f.hmma} | {f.instructions_per_hmma:.2f} "
                f"| {f.dependent_share:.0%} | {f.shared_bytes_per_hmma:.0f} | {f.mufu_per_hmma:.2f} | {f.bound} "
                f"| {f.predicted:.1%} | {band} |")
        else:
            memory.append(
                f"| {row['kernel']} | {label} | {res.registers} | {f.blocks} ({f.limit}) | {f.warps} "
                f"| {f.bytes_per_warp} | {f.in_flight} | {f.needed} | {f.reads:g}/{spec.get('min_reads', 1)} "
                f"| {f.predicted:.1%} | {band} |")
    return "\n\n".join("\n".join(t) for t in (tensor, warpgroup, combined, memory)) + "\n"


def predicted_tsv(rows: list[dict]) -> str:
    lines = ["# kernel\tarch\tpredicted fraction of peak (tensor kernels, sums) or of HBM bandwidth (memory kernels)",
             "# written by scripts/perf_model.py --write-docs; CI checks it is current"]
    for row in rows:
        value = row["combined"] if "combined" in row else row["figures"].predicted
        lines.append(f"{row['kernel']}\t{row['arch'].name}\t{value:.4f}")
    return "\n".join(lines) + "\n"


def replace_docs(text: str, generated: str) -> str:
    start, end = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if start < 0 or end < start:
        raise ModelError(f"{DOCS}: the markers {DOCS_BEGIN!r} and {DOCS_END!r} are missing")
    return text[:start + len(DOCS_BEGIN)] + "\n" + generated + text[end:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bands", type=Path, default=BANDS)
    parser.add_argument("--built", type=Path, default=BUILT, help="check_kernels.sh's output directory")
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--write-docs", action="store_true", help=f"write the tables into {DOCS.name}")
    docs.add_argument("--check-docs", action="store_true", help=f"fail unless {DOCS.name} holds these tables")
    args = parser.parse_args()
    try:
        rows, failures = evaluate(load_bands(args.bands), args.built)
        generated = tables(rows)
        print(generated)
        (args.built / "perf-model.md").write_text(generated)
        tsv = predicted_tsv(rows)
        if args.write_docs:
            DOCS.write_text(replace_docs(DOCS.read_text(), generated))
            PREDICTED.write_text(tsv)
        elif args.check_docs:
            if replace_docs(DOCS.read_text(), generated) != DOCS.read_text():
                failures.append(f"{DOCS}: its model tables differ from these; run scripts/perf_model.py --write-docs")
            if not PREDICTED.exists() or PREDICTED.read_text() != tsv:
                failures.append(f"{PREDICTED}: differs from these predictions; run scripts/perf_model.py --write-docs")
    except (ModelError, OSError, KeyError, subprocess.CalledProcessError) as error:
        print(f"perf_model: {error}", file=sys.stderr)
        return 2
    for failure in failures:
        print(f"ERROR {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
