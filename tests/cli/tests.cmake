interlace_test(cli_test integration SOURCES cli/cli_test.cc LIBS interlace::model interlace::learner)
target_compile_definitions(cli_test PRIVATE INTERLACE_BIN="$<TARGET_FILE:interlace>"
                           INTERLACE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_dependencies(cli_test interlace)

# A rollout worker written in Python from the wire protocol alone (pyzmq and the
# capnp tool), against a real learner. The pyzmq module is located here so the
# build-dependency check sees the package it comes from.
execute_process(COMMAND /usr/bin/python3 -c "import os, zmq; print(os.path.realpath(zmq.__file__))"
                OUTPUT_VARIABLE _pyzmq OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
set(PYZMQ_MODULE "${_pyzmq}" CACHE FILEPATH "pyzmq, for tests/foreign_worker (python3-zmq)" FORCE)
if(NOT PYZMQ_MODULE)
  message(WARNING "python3 cannot import zmq: the foreign worker test will fail; scripts/install-deps.sh installs python3-zmq")
endif()
add_test(NAME ForeignWorker.TrainsAJobFromTheWireProtocolAlone
         COMMAND ${PROJECT_SOURCE_DIR}/tests/foreign_worker/run_test.sh $<TARGET_FILE:interlace> ${PROJECT_SOURCE_DIR})
set_tests_properties(ForeignWorker.TrainsAJobFromTheWireProtocolAlone PROPERTIES LABELS integration TIMEOUT 600)

# The services are scraped by a real Prometheus (Debian's prometheus, installed
# by scripts/install-deps.sh); found here so the build-dependency check sees it.
find_program(PROMETHEUS_EXECUTABLE prometheus)
if(NOT PROMETHEUS_EXECUTABLE)
  message(WARNING "prometheus not found: rl_services_test will fail; scripts/install-deps.sh installs it")
  set(PROMETHEUS_EXECUTABLE prometheus-not-found)
endif()
interlace_test(rl_services_test integration SOURCES services/rl_services_test.cc
               LIBS interlace::transport cppzmq nlohmann_json::nlohmann_json)
target_compile_definitions(rl_services_test PRIVATE INTERLACE_BIN="$<TARGET_FILE:interlace>"
                           INTERLACE_SOURCE_DIR="${PROJECT_SOURCE_DIR}" PROMETHEUS_BIN="${PROMETHEUS_EXECUTABLE}")
add_dependencies(rl_services_test interlace)
if(INTERLACE_HAVE_NCCL)
  target_compile_definitions(rl_services_test PRIVATE INTERLACE_HAVE_NCCL=1)
endif()
