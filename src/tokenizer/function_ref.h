// A non-owning reference to a callable, cheap to pass by value (an address
// and a trampoline): the callbacks of the tokenizer's inner loops, where
// std::function would allocate and a template cannot cross a virtual call.
// The callable must outlive the reference (pass it for the length of a call).
#pragma once

#include <concepts>
#include <type_traits>
#include <utility>

namespace slm::tok {

template <class Signature>
class FunctionRef;

template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  template <class F>
    requires(!std::same_as<std::remove_cvref_t<F>, FunctionRef> && std::invocable<F&, Args...>)
  FunctionRef(F&& f)  // NOLINT(google-explicit-constructor): passed where a callable is expected
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* object, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(object))(std::forward<Args>(args)...);
        }) {}
  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, Args...);
};

}  // namespace slm::tok
