interlace_test(cli_test integration SOURCES cli/cli_test.cc LIBS interlace::model interlace::learner)
target_compile_definitions(cli_test PRIVATE INTERLACE_BIN="$<TARGET_FILE:interlace>"
                           INTERLACE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_dependencies(cli_test interlace)
