interlace_test(model_test unit SOURCES model/model_test.cc model/reference_model.cc LIBS interlace::model)
interlace_test(config_test unit SOURCES model/config_test.cc LIBS interlace::model)
interlace_test(safetensors_test unit SOURCES model/safetensors_test.cc LIBS interlace::model)
interlace_test(chat_template_test unit SOURCES model/chat_template_test.cc LIBS interlace::model)
