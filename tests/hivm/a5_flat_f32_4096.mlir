module attributes {dlti.target_system_spec = #dlti.target_system_spec<"NPU" : #hacc.target_device_spec<#dlti.dl_entry<"AI_CORE_COUNT", 36 : i32>, #dlti.dl_entry<"VECTOR_CORE_COUNT", 72 : i32>, #dlti.dl_entry<"UB_SIZE", 2031616 : i32>, #dlti.dl_entry<"UB_ALIGN_SIZE", 256 : i32>, #dlti.dl_entry<"ARCH", "dav-c310">>>, hacc.target = #hacc.target<"Ascend910_9599">} {
  func.func @kernel_fused_0_outlined_vf_0(%arg0: memref<4096xf32, #hivm.address_space<ub>>, %arg1: memref<4096xf32, #hivm.address_space<ub>>, %arg2: f32, %arg3: memref<4096xf32, #hivm.address_space<ub>>) attributes {hivm.func_core_type = #hivm.func_core_type<AIV>, hivm.vector_function, no_inline} {
    %0 = llvm.mlir.constant(8 : i32) : i32
    %1 = llvm.mlir.constant(0 : i32) : i32
    %2 = llvm.mlir.constant(4096 : i32) : i32
    %3 = "hivm_regbaseintrins.intr.hivm.pge.b32"(%0, %1) {mask_bit_width = 32 : i32} : (i32, i32) -> vector<256xi1>
    %4 = "hivm_regbaseintrins.intr.hivm.vbr"(%arg2) : (f32) -> vector<64xf32>
    cf.br ^bb1(%1 : i32)
  ^bb1(%5: i32):  // 2 preds: ^bb0, ^bb2
    %6 = arith.cmpi slt, %5, %2 : i32
    cf.cond_br %6, ^bb2, ^bb3
  ^bb2:  // pred: ^bb1
    %7 = "hivm_regbaseintrins.intr.hivm.vldsx1.v64f32"(%arg0, %1, %1, %1) : (!llvm.ptr<6>, i32, i32, i32) -> vector<64xf32>
    %8 = "hivm_regbaseintrins.intr.hivm.vldsx1.v64f32"(%arg1, %1, %1, %1) : (!llvm.ptr<6>, i32, i32, i32) -> vector<64xf32>
    %9 = "hivm_regbaseintrins.intr.hivm.pge.b32"(%0, %1) {mask_bit_width = 32 : i32} : (i32, i32) -> vector<256xi1>
    %10 = "hivm_regbaseintrins.intr.hivm.vsub.s.x"(%7, %8, %9) : (vector<64xf32>, vector<64xf32>, vector<256xi1>) -> vector<64xf32>
    %11 = "hivm_regbaseintrins.intr.hivm.vmuls.s.x"(%10, %arg2, %9) : (vector<64xf32>, f32, vector<256xi1>) -> vector<64xf32>
    "hivm_regbaseintrins.intr.hivm.vstsx1.v64f32"(%11, %arg3, %1, %0, %1, %9) : (vector<64xf32>, !llvm.ptr<6>, i32, i32, i32, vector<256xi1>) -> ()
    %12 = llvm.add %5, %0 : i32
    cf.br ^bb1(%12 : i32)
  ^bb3:  // pred: ^bb1
    return
  }
  func.func @kernel_fused_1_outlined_vf_0(%arg0: memref<1024x4xf16, #hivm.address_space<ub>>) attributes {hivm.func_core_type = #hivm.func_core_type<AIV>, hivm.vector_function, no_inline} {
    %0 = llvm.mlir.constant(0 : i32) : i32
    cf.br ^bb1(%0 : i32)
  ^bb1(%1: i32):  // 2 preds: ^bb0, ^bb4
    %2 = arith.cmpi slt, %1, %0 : i32
    cf.cond_br %2, ^bb2(%0 : i32), ^bb5
  ^bb2(%3: i32):  // 2 preds: ^bb1, ^bb3
    %4 = arith.cmpi slt, %3, %0 : i32
    cf.cond_br %4, ^bb3, ^bb4
  ^bb3:  // pred: ^bb2
    %5 = "hivm_regbaseintrins.intr.hivm.vabs.x"(%0, %0) : (vector<128xf16>, vector<256xi1>) -> vector<128xf16>
    cf.br ^bb2(%3 : i32)
  ^bb4:  // pred: ^bb2
    %6 = "hivm_regbaseintrins.intr.hivm.vcmp.le.s.z"(%0, %0, %0) : (vector<128xf16>, vector<128xf16>, vector<256xi1>) -> vector<256xi1>
    cf.br ^bb1(%1 : i32)
  ^bb5:  // pred: ^bb1
    return
  }
  func.func private @load_gm_to_ubuf_1d_float(memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<gm>>, memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<ub>>, i32, f32, index, i32) attributes {hacc.function_kind = #hacc.function_kind<DEVICE>}
  func.func private @store_ubuf_to_gm_1d_float(memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<ub>>, memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<gm>>, i32) attributes {hacc.function_kind = #hacc.function_kind<DEVICE>}
  func.func @kernel(%arg0: memref<?xf32, #hivm.address_space<gm>>, %arg1: memref<?xf32, #hivm.address_space<gm>>, %arg2: memref<?xf32, #hivm.address_space<gm>>, %arg3: f32, %arg4: i32) attributes {hacc.entry, hacc.function_kind = #hacc.function_kind<DEVICE>} {
    %0 = llvm.mlir.constant(0 : i64) : i64
    %1 = llvm.mlir.constant(16384 : i64) : i64
    %2 = llvm.mlir.constant(32768 : i64) : i64
    %3 = llvm.mlir.constant(0 : i32) : i32
    %4 = hivm.hir.get_block_idx -> i64
    hivm.hir.set_flag[<PIPE_V>, <PIPE_MTE2>, <EVENT_ID0>]
    cf.br ^bb1(%3 : i32)
  ^bb1(%5: i32):  // 2 preds: ^bb0, ^bb2
    %6 = arith.cmpi slt, %5, %arg4 : i32
    cf.cond_br %6, ^bb2, ^bb3
  ^bb2:  // pred: ^bb1
    %reinterpret_cast = memref.reinterpret_cast %arg0 to offset: [%5], sizes: [4096], strides: [1] : memref<?xf32, #hivm.address_space<gm>> to memref<4096xf32, strided<[1], offset: ?>, #hivm.address_space<gm>>
    %reinterpret_cast_0 = memref.reinterpret_cast %arg1 to offset: [%5], sizes: [4096], strides: [1] : memref<?xf32, #hivm.address_space<gm>> to memref<4096xf32, strided<[1], offset: ?>, #hivm.address_space<gm>>
    %reinterpret_cast_1 = memref.reinterpret_cast %arg2 to offset: [%5], sizes: [4096], strides: [1] : memref<?xf32, #hivm.address_space<gm>> to memref<4096xf32, strided<[1], offset: ?>, #hivm.address_space<gm>>
    %7 = hivm.hir.pointer_cast(%0) : memref<4096xf32, #hivm.address_space<ub>>
    %8 = hivm.hir.pointer_cast(%1) : memref<4096xf32, #hivm.address_space<ub>>
    %9 = hivm.hir.pointer_cast(%2) : memref<4096xf32, #hivm.address_space<ub>>
    %cast = memref.cast %reinterpret_cast : memref<4096xf32, strided<[1], offset: ?>, #hivm.address_space<gm>> to memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<gm>>
    %cast_2 = memref.cast %7 : memref<4096xf32, #hivm.address_space<ub>> to memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<ub>>
    hivm.hir.wait_flag[<PIPE_V>, <PIPE_MTE2>, <EVENT_ID0>]
    call @load_gm_to_ubuf_1d_float(%cast, %cast_2, %3, %arg3, %0, %3) : (memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<gm>>, memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<ub>>, i32, f32, index, i32) -> ()
    %cast_3 = memref.cast %reinterpret_cast_0 : memref<4096xf32, strided<[1], offset: ?>, #hivm.address_space<gm>> to memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<gm>>
    %cast_4 = memref.cast %8 : memref<4096xf32, #hivm.address_space<ub>> to memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<ub>>
    call @load_gm_to_ubuf_1d_float(%cast_3, %cast_4, %3, %arg3, %0, %3) : (memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<gm>>, memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<ub>>, i32, f32, index, i32) -> ()
    hivm.hir.set_flag[<PIPE_MTE2>, <PIPE_V>, <EVENT_ID0>]
    hivm.hir.wait_flag[<PIPE_MTE2>, <PIPE_V>, <EVENT_ID0>]
    call @kernel_fused_0_outlined_vf_0(%7, %8, %arg3, %9) {hivm.vector_function, no_inline} : (memref<4096xf32, #hivm.address_space<ub>>, memref<4096xf32, #hivm.address_space<ub>>, f32, memref<4096xf32, #hivm.address_space<ub>>) -> ()
    hivm.hir.set_flag[<PIPE_V>, <PIPE_MTE3>, <EVENT_ID0>]
    hivm.hir.wait_flag[<PIPE_V>, <PIPE_MTE3>, <EVENT_ID0>]
    %cast_5 = memref.cast %9 : memref<4096xf32, #hivm.address_space<ub>> to memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<ub>>
    %cast_6 = memref.cast %reinterpret_cast_1 : memref<4096xf32, strided<[1], offset: ?>, #hivm.address_space<gm>> to memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<gm>>
    call @store_ubuf_to_gm_1d_float(%cast_5, %cast_6, %3) : (memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<ub>>, memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<gm>>, i32) -> ()
    %10 = arith.addi %5, %arg4 overflow<nsw> : i32
    cf.br ^bb1(%10 : i32)
  ^bb3:  // pred: ^bb1
    %11 = hivm.hir.pointer_cast(%0) : memref<1024x4xf16, #hivm.address_space<ub>>
    call @kernel_fused_1_outlined_vf_0(%11) {hivm.vector_function, no_inline} : (memref<1024x4xf16, #hivm.address_space<ub>>) -> ()
    hivm.hir.pipe_barrier[<PIPE_ALL>]
    return
  }
}
