# The default CUDA architectures of the DecodeWeights kernel for an nvcc version: SASS for every
# GPU from Turing to Hopper that this nvcc knows, Jetson Orin (87) included, and compute_75 PTX,
# which the driver JIT-compiles for any newer GPU. nvcc 13 knows nothing below 7.5 (Jetson
# Xavier, sm_72, needs CUDA 11.x/12.x); 87 came with 11.4, 89 and 90 with 11.8, Blackwell (100,
# 120) with 12.8: its SASS costs 11 s of nvcc 13.0 on 2 cores (23 s instead of 12 s) and saves
# each process the JIT on B200 / RTX 50 GPUs.
# As a script: cmake -DNVCC_VERSION=12.8 -P architectures.cmake prints the list (tests/test_cuda_fatbin.py).
function(hyperonnx_cuda_architectures nvcc_version out)
  set(arches 75-real 80-real 86-real)
  if(nvcc_version VERSION_LESS 13.0)
    list(PREPEND arches 72-real)
  endif()
  if(nvcc_version VERSION_GREATER_EQUAL 11.4)
    list(APPEND arches 87-real)
  endif()
  if(nvcc_version VERSION_GREATER_EQUAL 11.8)
    list(APPEND arches 89-real 90-real)
  endif()
  if(nvcc_version VERSION_GREATER_EQUAL 12.8)
    list(APPEND arches 100-real 120-real)
  endif()
  list(APPEND arches 75-virtual)
  set(${out} "${arches}" PARENT_SCOPE)
endfunction()

if(CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  hyperonnx_cuda_architectures("${NVCC_VERSION}" arches)
  message("${arches}")
endif()
