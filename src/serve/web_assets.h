// Files the server sends, compiled into the binary (cmake/embed.cmake).
#pragma once

#include <string_view>

namespace slm::serve {

// src/serve/web/chat.html: the web chat at GET /.
std::string_view chat_page();

}  // namespace slm::serve
