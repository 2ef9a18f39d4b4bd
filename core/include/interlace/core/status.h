// Error handling helpers: recoverable errors travel as absl::Status; broken
// invariants abort with the failing expression and a message.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define INTERLACE_CONCAT_INNER(a, b) a##b
#define INTERLACE_CONCAT(a, b) INTERLACE_CONCAT_INNER(a, b)

#define INTERLACE_RETURN_IF_ERROR(expr)              \
  do {                                               \
    ::absl::Status interlace_status_ = (expr);       \
    if (!interlace_status_.ok()) return interlace_status_; \
  } while (0)

#define INTERLACE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return tmp.status();                   \
  lhs = std::move(*tmp)

#define INTERLACE_ASSIGN_OR_RETURN(lhs, expr) \
  INTERLACE_ASSIGN_OR_RETURN_IMPL(INTERLACE_CONCAT(interlace_or_, __LINE__), lhs, expr)

// Invariant check: a failure is a bug, not bad input, so it aborts.
#define INTERLACE_CHECK(cond, msg)                                                     \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: invariant failed: %s: %s\n", __FILE__, __LINE__, #cond, \
                   (msg));                                                             \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)
