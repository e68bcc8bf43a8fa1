// A strided fp32 tile of 64 rows of 4 (padded to 8 in the UB) against a row-broadcast target
// loaded at a stride of 2 (abridged): a 2-D vabs, a per-row loop of vcmp_le with a scalar UB
// load in it, one 2-D store.
module attributes {dlti.target_system_spec = #dlti.target_system_spec<"NPU" : #hacc.target_device_spec<#dlti.dl_entry<"VECTOR_CORE_COUNT", 40 : i32>, #dlti.dl_entry<"UB_SIZE", 1572864 : i32>>>} {
  func.func @kernel(%arg4: memref<?xf32, #hivm.address_space<gm>>, %arg5: memref<?xf32, #hivm.address_space<gm>>, %arg6: memref<?xf32, #hivm.address_space<gm>>) attributes {hacc.entry} {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c64 = arith.constant 64 : index
    %c0_i64 = arith.constant 0 : i64
    %c2048_i64 = arith.constant 2048 : i64
    %c4096_i64 = arith.constant 4096 : i64
    scf.for %arg44 = %10 to %arg13 step %arg41  : i32 {
      %rc1 = memref.reinterpret_cast %arg4 to offset: [%49], sizes: [64, 4], strides: [4, 1] : memref<?xf32, #hivm.address_space<gm>> to memref<64x4xf32, strided<[4, 1], offset: ?>, #hivm.address_space<gm>>
      %x = hivm.hir.pointer_cast(%c0_i64) : memref<64x8x1xf32, #hivm.address_space<ub>>
      %xs = memref.subview %x[0, 0, 0] [64, 4, 1] [1, 1, 1] : memref<64x8x1xf32, #hivm.address_space<ub>> to memref<64x4xf32, strided<[8, 1]>, #hivm.address_space<ub>>
      %g1 = memref.cast %rc1 : memref<64x4xf32, strided<[4, 1], offset: ?>, #hivm.address_space<gm>> to memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<gm>>
      %u1 = memref.cast %xs : memref<64x4xf32, strided<[8, 1]>, #hivm.address_space<ub>> to memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<ub>>
      func.call @load_gm_to_ubuf_2d_float(%g1, %u1, %c0_i32, %cst, %c0) : (memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<gm>>, memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<ub>>, i32, f32, index) -> ()
      %rc2 = memref.reinterpret_cast %arg5 to offset: [%50], sizes: [64, 1], strides: [2, 1] : memref<?xf32, #hivm.address_space<gm>> to memref<64x1xf32, strided<[2, 1], offset: ?>, #hivm.address_space<gm>>
      %y = hivm.hir.pointer_cast(%c2048_i64) : memref<64x1xf32, #hivm.address_space<ub>>
      %g2 = memref.cast %rc2 : memref<64x1xf32, strided<[2, 1], offset: ?>, #hivm.address_space<gm>> to memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<gm>>
      %u2 = memref.cast %y : memref<64x1xf32, #hivm.address_space<ub>> to memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<ub>>
      func.call @load_gm_to_ubuf_2d_float(%g2, %u2, %c0_i32, %cst, %c0) : (memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<gm>>, memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<ub>>, i32, f32, index) -> ()
      %a = memref.cast %xs : memref<64x4xf32, strided<[8, 1]>, #hivm.address_space<ub>> to memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<ub>>
      func.call @vabs_2d_float(%a, %a) : (memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<ub>>, memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<ub>>) -> ()
      hivm.hir.pipe_barrier[<PIPE_V>]
      %m = hivm.hir.pointer_cast(%c4096_i64) : memref<64x256x1xi1, #hivm.address_space<ub>>
      scf.for %arg45 = %c0 to %c64 step %c1 {
        %row = memref.subview %xs[%arg45, 0] [1, 4] [1, 1] : memref<64x4xf32, strided<[8, 1]>, #hivm.address_space<ub>> to memref<4xf32, strided<[1], offset: ?>, #hivm.address_space<ub>>
        %mask = memref.subview %m[%arg45, 0, 0] [1, 4, 1] [1, 1, 1] : memref<64x256x1xi1, #hivm.address_space<ub>> to memref<4xi1, strided<[1], offset: ?>, #hivm.address_space<ub>>
        %r = memref.cast %row : memref<4xf32, strided<[1], offset: ?>, #hivm.address_space<ub>> to memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<ub>>
        %k = memref.cast %mask : memref<4xi1, strided<[1], offset: ?>, #hivm.address_space<ub>> to memref<?xi1, strided<[?], offset: ?>, #hivm.address_space<ub>>
        %v = memref.load %y[%arg45, %c0] : memref<64x1xf32, #hivm.address_space<ub>>
        func.call @vcmp_le_1d_float(%r, %r, %k) : (memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<ub>>, memref<?xf32, strided<[?], offset: ?>, #hivm.address_space<ub>>, memref<?xi1, strided<[?], offset: ?>, #hivm.address_space<ub>>) -> ()
      }
      %rc3 = memref.reinterpret_cast %arg6 to offset: [%49], sizes: [64, 4], strides: [4, 1] : memref<?xf32, #hivm.address_space<gm>> to memref<64x4xf32, strided<[4, 1], offset: ?>, #hivm.address_space<gm>>
      %g3 = memref.cast %rc3 : memref<64x4xf32, strided<[4, 1], offset: ?>, #hivm.address_space<gm>> to memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<gm>>
      func.call @store_ubuf_to_gm_2d_float(%a, %g3, %c0_i32) : (memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<ub>>, memref<?x?xf32, strided<[?, ?], offset: ?>, #hivm.address_space<gm>>, i32) -> ()
    }
    return
  }
}
