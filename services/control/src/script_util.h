// What the control plane's Lua scripts share: Redis's clock, a job event, and
// how a script's error reply becomes a status (internal to the library).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "interlace/control/job_store.h"

namespace interlace::control::detail {

// `body` after helpers it may call: now_ms() (the server's clock; scripts
// replicate their effects, so reading it is allowed) and
// event(prefix, job_id, type, message) (one entry in the job's capped stream).
std::string with_prelude(const std::string& body);

// A script's `NOTFOUND ...` error is NotFound, `STATE ...` FailedPrecondition.
absl::Status script_error(const absl::Status& s);

}  // namespace interlace::control::detail
