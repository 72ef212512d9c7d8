"""The static performance model of warp-specialised Hopper kernels (kind "warpgroup" in
kernels/perf-bands.toml): a producer warpgroup issues the TMA copies, consumer warpgroups
run wgmma (HGMMA in the SASS) and the rest. scripts/perf_model.py calls `warpgroup_model`;
docs/kernels.md explains the figures.

One pass of the consumers' main loop (the loop with the most HGMMA work) is read on its
steady path. An HGMMA 64xNx16 does 64 N 16 multiply-adds; at the H100's dense bf16 peak
(4096 flops a cycle per SM) that is N / 2 cycles of the SM's four tensor cores, and the model
grants wgmma WGMMA_EFFICIENCY of it. Each consumer warp runs on its own SMSP, so per pass of
every consumer warpgroup, the SM needs at least:
- tensor: every consumer's HGMMA cycles, one after another;
- issue, fp32, integer, MUFU: each consumer's warp's instructions on its SMSP;
- shared memory: the HGMMA operands read from shared memory (A when it is there, always B)
  and the warps' own shared loads and stores, at 128 bytes a cycle;
- latency: one consumer's own pass played out in order (`pass_cycles`): its products on the
  tensor pipe until a WARPGROUP.DEPBAR waits for them, everything else as its dependences
  and pipes allow (a warpgroup's products and the softmax that needs them cannot overlap,
  the other consumer's can: so this bounds one pass, not the sum).
The prediction is the peak's cycles for the pass's matrix work over the largest bound.

`register_budgets` checks what the model cannot see in ptxas's report: that the code each
`setmaxnreg` leads to (USETMAXREG in the SASS) uses no register past the count it sets, so
the producer's 24 registers and the consumers' 240 are ones its SASS respects.
"""
from __future__ import annotations

import dataclasses
import re

# The share of the dense bf16 peak the best wgmma GEMMs reach on an H100 SXM (about 800 of
# 989 TFLOP/s in cuBLAS and CUTLASS measurements): the model's ceiling for the tensor pipe.
WGMMA_EFFICIENCY = 0.8
# Operand bytes an HGMMA 64xNx16 reads from shared memory: A is 64 x 16 bf16, B is 16 x N.
A_BYTES = 64 * 16 * 2
HGMMA = re.compile(r"HGMMA\.64x(\d+)x16")


def hgmma_n(ins) -> int:
    """N of an HGMMA 64xNx16 (0 for any other instruction)."""
    match = HGMMA.match(ins.opcode)
    return int(match.group(1)) if match else 0


def hgmma_shared_bytes(ins) -> int:
    """Shared bytes an HGMMA reads: B always, A unless it comes from registers."""
    n = hgmma_n(ins)
    if not n:
        return 0
    a_in_registers = bool(ins.operands) and len(ins.operands) > 1 and ins.operands[1].startswith("R")
    return n * 16 * 2 + (0 if a_in_registers else A_BYTES)


@dataclasses.dataclass
class WarpgroupFigures:
    consumers: int
    hgmma: int
    hgmma_cycles: float  # one consumer's pass, at the model's wgmma rate
    instructions: int  # one consumer warp's pass, besides HGMMA
    pass_cycles: float  # one consumer's pass alone, its products included
    shared_bytes: int  # per pass of every consumer
    bound: str
    predicted: float
    budgets: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # register_budgets


def pass_cycles(pm, arch, body) -> float:
    """One consumer warp's pass alone, in order, its products included: an instruction issues
    when its sources are ready and its pipe is free (a MUFU instruction holds that pipe 8
    cycles, an integer one 2), one a cycle; an
    HGMMA queues its N / 2 / WGMMA_EFFICIENCY cycles on the tensor pipe and goes on, the one
    marked `gsb0` closing a committed group; `WARPGROUP.DEPBAR.LE gsb0, k` waits until all
    but the newest k groups are done. So loads issued before a wait, and a softmax between
    two groups' issue and the wait for the second, run under the products; what waits on
    them does not. Two passes are played and the second is timed."""
    pipe = {**{b: ("integer", arch.int_cycles) for b in pm.INTEGER}, **{b: ("mufu", arch.mufu_cycles) for b in pm.MUFU},
            **{b: ("fp32", arch.fp32_cycles) for b in pm.FP32}}
    ready: dict[int, float] = {}
    free: dict[str, float] = {}  # when each pipe takes its next instruction
    clock, tensor_free, ends = 0.0, 0.0, []
    groups: list[float] = []  # when each committed group's products are done
    for _ in range(2):
        for ins in body:
            if ins.base == "WARPGROUP":
                clock += 1
                if "DEPBAR" in ins.modifiers:
                    pending = int(ins.operands[-1], 16) if ins.operands else 0
                    done = groups[:len(groups) - pending] if pending else groups
                    clock = max([clock] + done)
                    groups = groups[len(done):]
                continue
            unit, cycles = pipe.get(ins.base, ("other", 1.0))
            clock = max([clock + 1, free.get(unit, 0.0)] + [ready.get(r, 0.0) for r in pm.sources(ins)])
            free[unit] = clock + cycles
            if n := hgmma_n(ins):
                tensor_free = max(tensor_free, clock) + n / 2 / WGMMA_EFFICIENCY
                if "gsb0" in ins.operands:
                    groups.append(tensor_free)
                continue  # its accumulators are read after the DEPBAR
            for r in pm.destination(ins):
                ready[r] = clock + pm.LATENCY.get(ins.base, 5)
        ends.append(clock)
    return ends[1] - ends[0]


REGISTER = re.compile(r"(?<![U\w])R(\d+)(\.64)?")


def registers_used(ins) -> int:
    """One past the highest register an instruction names, pairs (`R4.64`, a 64-bit
    operation's operands) and 128-bit data operands counted whole: an over-estimate at worst."""
    wide = 4 if "128" in ins.modifiers else 2 if "64" in ins.modifiers or "WIDE" in ins.modifiers else 1
    top = 0
    for operand in ins.operands:
        for match in REGISTER.finditer(operand):
            width = 2 if match.group(2) else 1 if "[" in operand else wide
            top = max(top, int(match.group(1)) + width)
    return top


def reachable(code, start: int, stop=lambda ins: False) -> list[int]:
    """Indices of the instructions control can reach from `start`: fall-through, both arms
    of a guarded branch, the target of an unconditional one; an unguarded EXIT ends a path,
    and so does an instruction for which `stop` holds (left out)."""
    index = {ins.address: i for i, ins in enumerate(code)}
    seen, todo = set(), [start]
    while todo:
        i = todo.pop()
        if i in seen or i >= len(code) or stop(code[i]):
            continue
        seen.add(i)
        ins = code[i]
        target = ins.branch_target()
        if target is not None and target in index:
            todo.append(index[target])
            if ins.guarded:
                todo.append(i + 1)
        elif not (ins.base == "EXIT" and not ins.guarded):
            todo.append(i + 1)
    return sorted(seen)


def register_budgets(code) -> list[tuple[int, int]]:
    """(count set, registers used) for each `setmaxnreg` in the SASS: the highest register
    any instruction reachable from it names, up to the next one on that path."""
    def sets_count(ins) -> bool:
        return ins.base.endswith("SETMAXREG")

    return [(int(ins.operands[-1], 16),
             max((registers_used(code[i]) for i in reachable(code, start + 1, sets_count)), default=0))
            for start, ins in enumerate(code) if sets_count(ins)]


def warpgroup_model(pm, arch, code, consumers: int) -> WarpgroupFigures:
    """`pm` is scripts/perf_model.py (its SASS reading and latency play-out)."""
    budgets = register_budgets(code)
    for count, used in budgets:
        if used > count:
            raise pm.ModelError(f"code after setmaxnreg {count} uses {used} registers")
    span = pm.main_loop(code, hgmma_n, conditional=True)
    if span is None:
        raise pm.ModelError("no loop with HGMMA instructions")
    body = pm.steady_path(code, span, lambda ins: (hgmma_n(ins), pm.global_load_bytes(ins)))
    hgmmas = [ins for ins in body if hgmma_n(ins)]
    others = [ins for ins in body if not hgmma_n(ins) and ins.base != "WARPGROUP"]
    peak_cycles = sum(hgmma_n(ins) for ins in hgmmas) / 2
    tensor = peak_cycles / WGMMA_EFFICIENCY
    pipes = {
        "issue": len(others) + len(hgmmas),
        "fp32": sum(ins.base in pm.FP32 for ins in others) * arch.fp32_cycles,
        "integer": sum(ins.base in pm.INTEGER for ins in others) * arch.int_cycles,
        "mufu": sum(ins.base in pm.MUFU for ins in others) * arch.mufu_cycles,
    }
    shared = consumers * (sum(hgmma_shared_bytes(ins) for ins in hgmmas) + 4 * sum(map(pm.shared_bytes, others)))
    own = pass_cycles(pm, arch, body)
    cycles = {
        "tensor": consumers * tensor,
        **{name: consumers * value for name, value in pipes.items()},
        "shared": shared / arch.smem_bytes_per_cycle,
        "latency": own,
    }
    bound = max(cycles, key=cycles.get)
    return WarpgroupFigures(consumers, len(hgmmas), tensor, len(others), own, shared, bound,
                            consumers * peak_cycles / cycles[bound], budgets)
