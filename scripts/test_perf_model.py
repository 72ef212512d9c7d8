#!/usr/bin/env python3
"""Tests of scripts/perf_model.py's reading of SASS and its arithmetic, on hand-written
listings in cuobjdump's format (run by scripts/check_kernels.sh before the model itself)."""
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import perf_model as pm  # noqa: E402
import perf_model_hopper as hopper  # noqa: E402


def listing(*lines: str) -> list:
    """Instructions at addresses 0x0000, 0x0010, ... in cuobjdump's layout."""
    text = "\n".join(f"        /*{16 * i:04x}*/   {line} ;   /* 0x0 */" for i, line in enumerate(lines))
    return pm.parse_sass(text)


class ParsingTest(unittest.TestCase):
    def test_guards_opcodes_and_operands_are_read(self):
        code = listing("@!P0 BRA 0x0", "LDSM.16.M88.4 R60, [R11+0x400]", "HMMA.16816.F32.BF16 R4, R60.reuse, R8, R4")
        self.assertTrue(code[0].guarded)
        self.assertEqual(code[0].branch_target(), 0)
        self.assertEqual(code[1].base, "LDSM")
        self.assertEqual(code[2].operands, ["R4", "R60.reuse", "R8", "R4"])

    def test_shared_and_global_bytes_follow_the_width(self):
        code = listing("LDSM.16.M88.4 R0, [R1]", "LDSM.16.MT88.2 R0, [R1]", "LDS.128 R0, [R1]", "SHFL.BFLY PT, R0, R1, 0x1, 0x1f",
                       "LDGSTS.E.BYPASS.128 [R1], desc[UR4][R2.64]", "LDG.E.U16 R0, desc[UR4][R2.64]", "LDG.E R0, desc[UR4][R2.64]")
        self.assertEqual([pm.shared_bytes(i) for i in code], [512, 256, 512, 128, 512, 0, 0])
        self.assertEqual([pm.global_load_bytes(i) for i in code], [0, 0, 0, 0, 512, 64, 128])

    def test_ptxas_report_gives_registers_and_spills_per_kernel(self):
        report = ("ptxas info    : Compiling entry function 'k1' for 'sm_90a'\n"
                  "ptxas info    : Function properties for k1\n"
                  "    8 bytes stack frame, 24 bytes spill stores, 16 bytes spill loads\n"
                  "ptxas info    : Used 255 registers, used 1 barriers, 1024 bytes smem\n")
        self.assertEqual(pm.parse_ptxas(report)["k1"], pm.Resources(255, 1024, 48))


class PathTest(unittest.TestCase):
    def test_the_steady_path_keeps_the_work_and_skips_the_longer_boundary_arm(self):
        code = listing(
            "HMMA.16816.F32.BF16 R4, R8, R12, R4",   # 0x00 loop head
            "@P0 BRA 0x50",                          # 0x10 to the short arm
            "FMUL R1, R1, R2", "FMUL R1, R1, R2",    # 0x20, 0x30 the long arm (a mask, say)
            "BRA 0x60",                              # 0x40
            "FADD R1, R1, R2",                       # 0x50 the short arm
            "@P1 BRA 0x80",                          # 0x60 skipping the copy would skip work
            "LDGSTS.E.BYPASS.128 [R1], desc[UR4][R2.64]",  # 0x70
            "@!P2 BRA 0x0")                          # 0x80 back to the head
        first, last = pm.main_loop(code, lambda i: i.base == "HMMA")
        self.assertEqual((first, last), (0, 8))
        path = pm.steady_path(code, (first, last), lambda i: (i.base == "HMMA", pm.global_load_bytes(i)))
        self.assertEqual([i.address for i in path], [0x00, 0x10, 0x50, 0x60, 0x70, 0x80])

    def test_a_dependent_hmma_chain_costs_its_latency_and_independent_ones_do_not(self):
        chain = listing(*["HMMA.16816.F32.BF16 R4, R8, R12, R4"] * 4)
        spread = listing(*[f"HMMA.16816.F32.BF16 R{4 * k + 16}, R8, R12, R{4 * k + 16}" for k in range(4)])
        self.assertGreaterEqual(pm.one_warp_cycles(chain), 4 * 33)
        self.assertLessEqual(pm.one_warp_cycles(spread), 40)


class OccupancyTest(unittest.TestCase):
    def test_blocks_per_sm_come_from_the_tightest_resource(self):
        a100, h100 = pm.ARCHS["sm_80"], pm.ARCHS["sm_90a"]
        self.assertEqual(pm.blocks_per_sm(h100, 128, 255, 48 * 1024), (2, "registers"))
        self.assertEqual(pm.blocks_per_sm(a100, 128, 128, 85 * 1024), (1, "shared"))
        self.assertEqual(pm.blocks_per_sm(h100, 256, 20, 0), (8, "warps"))

    def test_a_memory_kernel_with_more_bytes_in_flight_is_predicted_faster(self):
        res = pm.Resources(32, 0, 0)
        narrow = listing("LDG.E.U16 R0, desc[UR4][R2.64]", "STG.E.U16 desc[UR4][R2.64], R0", "@P0 BRA 0x0")
        wide = listing("LDG.E.128 R0, desc[UR4][R2.64]", "STG.E.128 desc[UR4][R2.64], R0", "@P0 BRA 0x0")
        slow = pm.memory_model(pm.ARCHS["sm_90a"], narrow, res, 256, 0, 1, 1)
        fast = pm.memory_model(pm.ARCHS["sm_90a"], wide, res, 256, 0, 1, 1)
        self.assertEqual((slow.bytes_per_warp, fast.bytes_per_warp), (64, 512))
        self.assertLess(slow.predicted, 0.5)
        self.assertAlmostEqual(fast.predicted, pm.ARCHS["sm_90a"].dram_efficiency)
        twice = pm.memory_model(pm.ARCHS["sm_90a"], wide, res, 256, 0, 2, 1)
        self.assertAlmostEqual(twice.predicted, fast.predicted / 2)

    def test_loads_outside_any_loop_count_when_they_are_the_kernels_main_work(self):
        # Four 16-byte loads each thread issues once, and a slow path's loop of 2-byte loads.
        code = listing(*["LDG.E.128 R0, desc[UR4][R2.64]"] * 4, "@P0 EXIT",
                       "LDG.E.U16 R0, desc[UR4][R2.64]", "@P1 BRA 0x50", "EXIT")
        figures = pm.memory_model(pm.ARCHS["sm_80"], code, pm.Resources(32, 0, 0), 256, 0, 1, 1)
        self.assertEqual(figures.bytes_per_warp, 4 * 512)


class WarpgroupTest(unittest.TestCase):
    H100 = pm.ARCHS["sm_90a"]

    def test_hgmma_shapes_and_their_shared_operands_are_read(self):
        code = listing("HGMMA.64x128x16.F32.BF16 R24, gdesc[UR16], RZ, !UPT",
                       "HGMMA.64x64x16.F32.BF16 R88, R24, gdesc[UR8].tnspB, R88, gsb0", "WARPGROUP.ARRIVE")
        self.assertEqual(code[0].opcode, "HGMMA.64x128x16.F32.BF16")
        self.assertEqual([hopper.hgmma_n(i) for i in code], [128, 64, 0])
        # SS reads A (2 KB) and B (32 N bytes); RS reads B alone.
        self.assertEqual([hopper.hgmma_shared_bytes(i) for i in code], [2048 + 4096, 2048, 0])

    def test_a_pass_of_products_alone_is_bound_by_the_tensor_pipe_at_the_wgmma_ceiling(self):
        code = listing(*["HGMMA.64x128x16.F32.BF16 R24, R8, gdesc[UR16], R24"] * 8, "@P0 BRA 0x0")
        f = hopper.warpgroup_model(pm, self.H100, code, 2)
        self.assertEqual((f.hgmma, f.bound), (8, "tensor"))
        self.assertAlmostEqual(f.hgmma_cycles, 8 * 64 / hopper.WGMMA_EFFICIENCY)
        self.assertAlmostEqual(f.predicted, hopper.WGMMA_EFFICIENCY)

    def test_a_long_dependent_chain_beside_the_products_binds_one_consumers_pass(self):
        # Eight products and a chain of 200 dependent exponentials: a consumer's pass is its
        # products then the chain, which the other consumer's products cannot hide.
        chain = ["MUFU.EX2 R2, R2"] * 200
        code = listing("HGMMA.64x64x16.F32.BF16 R24, R8, gdesc[UR16], R24", *chain, "@P0 BRA 0x0")
        f = hopper.warpgroup_model(pm, self.H100, code, 2)
        self.assertEqual(f.bound, "latency")
        self.assertGreaterEqual(f.pass_cycles, 200 * 20)
        self.assertLess(f.predicted, 0.05)

    def test_a_load_issued_before_the_wait_runs_under_the_products_and_one_after_it_does_not(self):
        products = ["HGMMA.64x128x16.F32.BF16 R24, R8, gdesc[UR16], R24"] * 3 + [
            "HGMMA.64x128x16.F32.BF16 R24, R8, gdesc[UR16], R24, gsb0"]  # 4 x 80 cycles at the ceiling
        use = ["FADD R3, R2, R2", "@P0 BRA 0x0"]
        before = listing(*products, "LDG.E R2, desc[UR4][R4.64]", "WARPGROUP.DEPBAR.LE gsb0, 0x0", *use)
        after = listing(*products, "WARPGROUP.DEPBAR.LE gsb0, 0x0", "LDG.E R2, desc[UR4][R4.64]", *use)
        overlapped = hopper.pass_cycles(pm, self.H100, before)
        serial = hopper.pass_cycles(pm, self.H100, after)
        self.assertLess(overlapped, 4 * 80 + 600)
        self.assertGreaterEqual(serial, 4 * 80 + 600)

    def test_waiting_for_all_but_the_newest_group_leaves_it_running(self):
        group = lambda r: ["HGMMA.64x128x16.F32.BF16 R%d, R8, gdesc[UR16], R%d, gsb0" % (r, r)]  # noqa: E731
        work = ["FADD R3, R2, R2"] * 60 + ["@P0 BRA 0x0"]
        one = listing(*group(24), *group(88), "WARPGROUP.DEPBAR.LE gsb0, 0x1", *work[:-1],
                      "WARPGROUP.DEPBAR.LE gsb0, 0x0", work[-1])
        zero = listing(*group(24), *group(88), "WARPGROUP.DEPBAR.LE gsb0, 0x0", *work)
        # 80 cycles a group: the first wait lets the 60 adds run under the second group.
        self.assertLess(hopper.pass_cycles(pm, self.H100, one), hopper.pass_cycles(pm, self.H100, zero))

    def test_each_setmaxnreg_is_held_to_the_registers_its_path_names(self):
        code = listing(
            "@P0 BRA 0x50",                                # 0x00 consumers jump ahead
            "USETMAXREG.DEALLOC.CTAPOOL 0x18",            # 0x10 the producer
            "MOV R5, 0x1",                                  # 0x20
            "STG.E.64 desc[UR4][R2.64], R22",              # 0x30 R22 and R23: 24 registers
            "EXIT",                                         # 0x40
            "USETMAXREG.TRY_ALLOC.CTAPOOL UP0, 0xf0",      # 0x50 the consumers
            "HGMMA.64x128x16.F32.BF16 R24, R8, gdesc[UR16], R24",
            "FADD R230, R2, R2",                            # 231 registers
            "EXIT")
        self.assertEqual(hopper.register_budgets(code), [(24, 24), (240, 231)])
        over = listing("USETMAXREG.DEALLOC.CTAPOOL 0x18", "LDS.128 R24, [R1]", "EXIT")
        self.assertEqual(hopper.register_budgets(over), [(24, 28)])
        with self.assertRaisesRegex(pm.ModelError, "setmaxnreg 24 uses 28"):
            hopper.warpgroup_model(pm, self.H100, over, 2)


if __name__ == "__main__":
    unittest.main(verbosity=1)
