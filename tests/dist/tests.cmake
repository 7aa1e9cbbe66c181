# Multi-process data-parallel tests of mlr-train (included by tests/CMakeLists.txt): CPU ranks as
# separate processes on the demo model, launched by scripts/launch_cpu_ranks.sh.
if(TARGET mlr-train AND TARGET mlr_llama)
  add_executable(dist_compare_runs ${CMAKE_CURRENT_LIST_DIR}/compare_runs.cpp)
  target_link_libraries(dist_compare_runs PRIVATE mlr_llama nlohmann_json::nlohmann_json fmt::fmt)
  if(MLR_CUDA AND MLR_CUDA_KERNELS)
    mlr_cuda_test_targets(dist_compare_runs)  # the dist_nccl_* tests compare with it
  endif()
  # Bounds of "N ranks x R/N rows = 1 rank x R rows" (6 steps at the demo's lr): losses to 1e-5
  # relative, weights to 5e-5 of each tensor's largest value (float32 sums in another order,
  # amplified by AdamW's normalisation where gradients are tiny). Measured: losses 1e-7, weights
  # 2.5e-6 at most (MultiLoRA on 4 ranks).
  set(dp_loss_bound 1e-5)
  set(dp_weight_bound 5e-5)
  # name|ranks|overrides,...
  set(dp_runs "lora_1|1|adapter.type=lora" "lora_2|2|adapter.type=lora" "lora_4|4|adapter.type=lora" "multilora_2|2|adapter.type=multilora"
      "multilora_4|4|adapter.type=multilora" "smora_2|2|adapter.type=smora" "smora_4|4|adapter.type=smora" "full_2|2|adapter.type=full,optim.lr=2e-3"
      "full_4|4|adapter.type=full,optim.lr=2e-3" "full_zero_2|2|adapter.type=full,optim.lr=2e-3,train.zero_stage=1"
      "smora_sharded_base_2|2|adapter.type=smora,train.shard_frozen_base=true,train.activation_checkpointing=true,eval.interval=3"
      # DoRA's magnitudes start at the base weights' row norms: computed one gathered layer at a time.
      "dora_sharded_base_2|2|adapter.type=dora,train.shard_frozen_base=true,train.activation_checkpointing=true"
      # Buckets of 8 KiB: many buckets, reduced while backward runs (ZeRO-2 reduce-scatters them).
      "full_small_buckets_4|4|adapter.type=full,optim.lr=2e-3,train.grad_bucket_mib=0.008"
      "full_zero2_2|2|adapter.type=full,optim.lr=2e-3,train.zero_stage=2,train.grad_bucket_mib=0.008"
      "lora_zero2_2|2|adapter.type=lora,train.zero_stage=2"
      # Gradient accumulation: only the last micro-batch's backward reduces (the others accumulate).
      "full_zero2_accum_2|2|adapter.type=full,optim.lr=2e-3,train.zero_stage=2,train.grad_accum=2,train.grad_bucket_mib=0.008"
      # Periodic evaluation split over the ranks (BoolQ's requests): the same accuracies as 1 rank.
      "lora_eval_4|4|adapter.type=lora,eval.interval=3"
      # The same with the base sharded: evaluated in lockstep (ranks 2 and 3 have no held-out
      # batch and join the others' passes), the same figures, one layer whole at a time.
      "lora_sharded_base_eval_4|4|adapter.type=lora,train.shard_frozen_base=true,eval.interval=3")
  # Registers `<prefix>_<name>` for each "name|ranks|overrides,..." of the list named `runs`.
  function(mlr_add_dp_runs prefix label timeout runs)
    foreach(run ${${runs}})
      string(REPLACE "|" ";" parts "${run}")
      list(GET parts 0 name)
      list(GET parts 1 ranks)
      list(GET parts 2 overrides)
      string(REPLACE "," ";" overrides "${overrides}")
      add_test(NAME ${prefix}_${name}
               COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/data_parallel_test.sh $<TARGET_FILE:mlr-train>
                       $<TARGET_FILE:dist_compare_runs> ${CMAKE_CURRENT_BINARY_DIR}/${prefix}_${name} ${ranks}
                       ${dp_loss_bound} ${dp_weight_bound} ${ARGN} ${overrides}
               WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
      set_tests_properties(${prefix}_${name} PROPERTIES LABELS ${label} TIMEOUT ${timeout} SKIP_RETURN_CODE 77)
    endforeach()
  endfunction()
  mlr_add_dp_runs(dist_data_parallel cpu 300 dp_runs)
  # The same on CUDA tensors through the NCCL communicator (label cuda): in the emulated CUDA build
  # over the emulated NCCL (dist/emulated_nccl.cpp: every CUDA path of data parallel, the NCCL
  # communicator's streams, events and queued jobs included); on a machine with 2 GPUs over NCCL;
  # skipped elsewhere. Full fine-tuning with ZeRO-2 and 17 buckets queued during backward; LoRA on
  # the sharded base, prefetched, with activation checkpointing and evaluation.
  set(dp_cuda_runs "full_zero2_2|2|adapter.type=full,optim.lr=2e-3,train.zero_stage=2,train.grad_bucket_mib=0.008"
      "lora_sharded_base_2|2|adapter.type=lora,train.shard_frozen_base=true,train.activation_checkpointing=true,eval.interval=3")
  mlr_add_dp_runs(dist_nccl_data_parallel cuda 600 dp_cuda_runs model.device=cuda)
  # Variants of one 2-rank run that must train alike: ZeRO stages 0, 1 and 2 (full fine-tuning and
  # LoRA), and gradients reduced during backward (the default) or after it. Two ranks add two
  # numbers in either order to the same float, so only the gradient norm (ZeRO-2 sums each rank's
  # share of the squares) may differ in its last bits; measured: identical, bound 1e-7.
  set(variant_runs "full|adapter.type=full,optim.lr=2e-3,train.grad_bucket_mib=0.008|train.zero_stage=0|train.zero_stage=1|train.zero_stage=2|train.overlap_grad_reduce=false,train.zero_stage=2"
      "lora|adapter.type=lora|train.zero_stage=0|train.overlap_grad_reduce=false|train.zero_stage=2"
      # DoRA on the sharded base (magnitudes initialised one gathered layer at a time, weight norms
      # taken while a layer is gathered, recomputation included) against the base kept whole.
      "dora|adapter.type=dora|train.shard_frozen_base=false|train.shard_frozen_base=true|train.shard_frozen_base=true,train.activation_checkpointing=true")
  foreach(run ${variant_runs})
    string(REPLACE "|" ";" parts "${run}")
    list(POP_FRONT parts name common)
    add_test(NAME dist_variants_${name}
             COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/variants_test.sh $<TARGET_FILE:mlr-train> $<TARGET_FILE:dist_compare_runs>
                     ${CMAKE_CURRENT_BINARY_DIR}/dp_variants_${name} 2 1e-7 1e-7 ${common} ${parts}
             WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(dist_variants_${name} PROPERTIES LABELS "cpu" TIMEOUT 300)
  endforeach()
  # One launched rank on a GPU: the gradients go through NCCL (label cuda: skipped without a GPU; in
  # the emulated build through the emulated NCCL).
  add_test(NAME dist_nccl_world1
           COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/nccl_world1_test.sh $<TARGET_FILE:mlr-train> $<TARGET_FILE:dist_compare_runs>
                   ${CMAKE_CURRENT_BINARY_DIR}/dp_nccl_world1 ${dp_loss_bound} ${dp_weight_bound}
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(dist_nccl_world1 PROPERTIES LABELS "cuda" TIMEOUT 600 SKIP_RETURN_CODE 77)
  # mpirun and torchrun (or torchrun's environment with its agent holding MASTER_PORT) launching
  # mlr-train unchanged, each equal to one process with the whole batch.
  add_test(NAME dist_launchers
           COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/launchers_test.sh $<TARGET_FILE:mlr-train> $<TARGET_FILE:dist_compare_runs>
                   ${CMAKE_CURRENT_BINARY_DIR}/dp_launchers ${dp_loss_bound} ${dp_weight_bound}
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(dist_launchers PROPERTIES LABELS "cpu" TIMEOUT 300 SKIP_RETURN_CODE 77)
  add_test(NAME dist_resume
           COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/resume_test.sh $<TARGET_FILE:mlr-train> $<TARGET_FILE:dist_compare_runs>
                   ${CMAKE_CURRENT_BINARY_DIR}/dp_resume ${dp_loss_bound} ${dp_weight_bound} adapter.type=smora
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(dist_resume PROPERTIES LABELS "cpu" TIMEOUT 300)
  # DoRA on the sharded base resumes with its magnitudes from the checkpoint (no pass over the base).
  add_test(NAME dist_resume_dora_sharded_base
           COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/resume_test.sh $<TARGET_FILE:mlr-train> $<TARGET_FILE:dist_compare_runs>
                   ${CMAKE_CURRENT_BINARY_DIR}/dp_resume_dora_sharded ${dp_loss_bound} ${dp_weight_bound} adapter.type=dora
                   train.shard_frozen_base=true
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(dist_resume_dora_sharded_base PROPERTIES LABELS "cpu" TIMEOUT 300)
  # --plan on LLaMA-2 70B's shape (config.json only): LoRA fits 8 x 80 GB only with the base sharded.
  mlr_add_output_test(NAME mlr_train_plan EXPECT "total +138\\.86 GiB +27\\.60 GiB.*fits 80\\.00 GiB\\? +no +yes"
                      COMMAND mlr-train configs/plan/llama2.yaml model.path=llama-2-70b --plan --world-size 8
                      WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(mlr_train_plan PROPERTIES LABELS "cpu" TIMEOUT 60)
  # ZeRO-1 in bf16 (the f32 master weights are gathered into the checkpoint): 2 ranks resume
  # bit-identically; 1 rank agrees to bf16's rounding of gradients summed in another order
  # (measured 1.9e-4 on losses, 2.4e-4 on weights, the same without ZeRO).
  add_test(NAME dist_resume_zero_bf16
           COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/resume_test.sh $<TARGET_FILE:mlr-train> $<TARGET_FILE:dist_compare_runs>
                   ${CMAKE_CURRENT_BINARY_DIR}/dp_resume_zero_bf16 1e-3 1e-3 adapter.type=full optim.lr=2e-3
                   train.zero_stage=1 train.precision=bf16
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(dist_resume_zero_bf16 PROPERTIES LABELS "cpu" TIMEOUT 300)
  # ZeRO-2 (gradients reduce-scattered, 8 KiB buckets) resumes the same way.
  add_test(NAME dist_resume_zero2_bf16
           COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/resume_test.sh $<TARGET_FILE:mlr-train> $<TARGET_FILE:dist_compare_runs>
                   ${CMAKE_CURRENT_BINARY_DIR}/dp_resume_zero2_bf16 1e-3 1e-3 adapter.type=full optim.lr=2e-3
                   train.zero_stage=2 train.precision=bf16 train.grad_bucket_mib=0.008
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(dist_resume_zero2_bf16 PROPERTIES LABELS "cpu" TIMEOUT 300)
  add_test(NAME dist_sigterm
           COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/sigterm_test.sh $<TARGET_FILE:mlr-train> ${CMAKE_CURRENT_BINARY_DIR}/dp_sigterm
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(dist_sigterm PROPERTIES LABELS "cpu" TIMEOUT 120)
  add_test(NAME dist_kill_rank
           COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/kill_rank_test.sh $<TARGET_FILE:mlr-train> ${CMAKE_CURRENT_BINARY_DIR}/dp_kill
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(dist_kill_rank PROPERTIES LABELS "cpu" TIMEOUT 120)
  # The same with the gradients on CUDA through the NCCL communicator (emulated NCCL in the
  # emulated build; 2 GPUs elsewhere; skipped without).
  add_test(NAME dist_nccl_kill_rank
           COMMAND env MLR_TEST_OVERRIDES=model.device=cuda sh ${CMAKE_CURRENT_LIST_DIR}/kill_rank_test.sh
                   $<TARGET_FILE:mlr-train> ${CMAKE_CURRENT_BINARY_DIR}/dp_nccl_kill
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(dist_nccl_kill_rank PROPERTIES LABELS "cuda" TIMEOUT 300 SKIP_RETURN_CODE 77)
endif()
