#include "interlace/metrics/registry.h"

namespace interlace::metrics {

void register_build_info(Registry& registry, bool nccl) {
  registry
      .gauge("interlace_build_info", "1; the labels say which build: version, commit, CUDA and NCCL built in",
             {{"version", INTERLACE_VERSION},
              {"commit", INTERLACE_GIT_COMMIT},
              {"cuda", INTERLACE_BUILT_CUDA ? "true" : "false"},
              {"nccl", nccl ? "true" : "false"}})
      .set(1);
}

}  // namespace interlace::metrics
