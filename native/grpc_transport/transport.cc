// A byte-level gRPC server for sonic's Python data plane (sonic.server.frontends.grpc_native).
//
// Why: grpcio's Python server spends more CPU per call than Triton's whole
// inference path.  This module keeps only the bytes in C++: grpc++'s generic
// async service accepts every method without parsing a message, one thread
// drives the completion queue, and calls are handed to Python in bulk through a
// queue whose eventfd the asyncio loop watches.  Python decodes, checks
// credentials, runs the data plane and encodes; each answer comes back as soon as
// it is encoded (Send takes a list) and is written by the completion-queue thread,
// woken by an alarm that is due at once: grpc's write and finish are CPU the
// Python thread, the one that limits the server under load, no longer spends
// (benchmarks/server_vs_triton.py, batch 64, concurrency 4: 1.01x Triton's
// throughput before, 1.17x after).
//
// The events and answers are the frames of the --grpc-frontends relay
// (sonic.server.relay.frontend): CALL (a unary request), OPEN / MSG / END (a
// stream and its messages), CANCEL (the client went away) one way; REPLY,
// ERROR, MSG and END the other.  So the same Python code serves both.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <absl/synchronization/mutex.h>
#include <grpcpp/alarm.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace py = pybind11;

namespace {

// Frame kinds, as sonic.server.relay.frontend numbers them; META and GO only with credentials
// (gated calls): a call's metadata goes to Python before its message is read, and the
// message is read only once Python says GO (or never: Python answers ERROR instead).
enum Kind : int {
  CALL = 1, OPEN = 2, META = 3, CANCEL = 4, MSG = 6, END = 7, REPLY = 8, ERROR = 9, GO = 10
};
// How a method streams: its requests, its responses.
enum Shape : int { UNARY = 0, CLIENT_STREAMING = 1, SERVER_STREAMING = 2, BIDI = 3 };

struct Event {
  int kind;
  uint64_t call;
  int method;
  grpc::ByteBuffer body;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::string peer;
  bool with_metadata = false;
  // When the event was made (for a call, once its message was read), on CLOCK_MONOTONIC,
  // the clock of Python's time.perf_counter_ns: the data plane times requests from here, so
  // that the wait for the event loop counts as queue time.
  int64_t arrived_ns = 0;
};

int64_t MonotonicNs() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

class Server;

// One answer from Python, waiting for the completion-queue thread.
struct Answer {
  int kind;
  uint64_t call;
  int code;
  grpc::ByteBuffer body;
  std::string text;
};

// One RPC.  Its grpc objects live until the call is done and its last operation completed;
// the completion-queue thread owns that decision, answers from Python find the call by id.
struct Call {
  enum Op { NEW, READ, WRITE, FINISH, DONE };
  struct Tag {
    Call* call;
    Op op;
  };
  Server* server;
  uint64_t id = 0;
  int method = -1;
  int shape = UNARY;
  grpc::GenericServerContext ctx;
  grpc::GenericServerAsyncReaderWriter stream{&ctx};
  grpc::ByteBuffer in;
  Tag tags[5] = {{this, NEW}, {this, READ}, {this, WRITE}, {this, FINISH}, {this, DONE}};
  // Guarded by mu: the answer side, which Python drives.
  std::mutex mu;
  std::deque<grpc::ByteBuffer> writes;
  bool writing = false;
  bool finishing = false;  // Finish (or WriteAndFinish) started or queued
  bool finish_queued = false;
  grpc::Status final_status;
  // Completion-queue thread only.
  bool done = false;
  bool finished = false;

  explicit Call(Server* s) : server(s) {}
};

class Server {
 public:
  Server(std::vector<std::string> methods, std::vector<int> shapes, bool gated)
      : methods_(std::move(methods)), shapes_(std::move(shapes)), gated_(gated) {
    for (size_t i = 0; i < methods_.size(); ++i) index_[methods_[i]] = static_cast<int>(i);
    efd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  }

  ~Server() {
    Stop(0);
    close(efd_);
  }

  // Bind and start; returns the bound port.  SIGINT and SIGTERM are blocked while grpc
  // starts its threads, so that they go to Python's main thread.
  // `options` are grpc channel arguments (message sizes, SO_REUSEPORT, flow control,
  // keepalive), the same list sonic gives its grpc.aio servers.
  int Start(const std::string& address,
            const std::vector<std::pair<std::string, int>>& options, const py::dict& tls) {
    grpc::ServerBuilder builder;
    for (const auto& [name, value] : options) builder.AddChannelArgument(name, value);
    builder.RegisterAsyncGenericService(&service_);
    int port = 0;
    builder.AddListeningPort(address, Credentials(tls), &port);
    cq_ = builder.AddCompletionQueue();
    wake_ = std::make_unique<grpc::Alarm>();
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    {
      py::gil_scoped_release release;
      server_ = builder.BuildAndStart();
      if (server_) {
        running_ = true;
        for (int i = 0; i < kAcceptors; ++i) Accept();
        thread_ = std::thread([this] { Loop(); });
        // Named, so that top -H and the CPU-per-thread benchmark (benchmarks/dataplane_cost.py)
        // tell it from Python's threads.
        pthread_setname_np(thread_.native_handle(), "sonic-grpc-cq");
      }
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (!server_ || port == 0) throw std::runtime_error("cannot bind the gRPC server to " + address);
    return port;
  }

  // Stop accepting; calls still open get `grace_s` seconds, then are cancelled.  Answers
  // that arrive afterwards are dropped.
  void Stop(double grace_s) {
    if (!server_) return;
    py::gil_scoped_release release;
    {
      std::unique_lock<std::shared_mutex> lock(running_mu_);  // waits for a Send under way
      running_ = false;
    }
    auto deadline = std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000));
    server_->Shutdown(deadline);
    cq_->Shutdown();
    if (thread_.joinable()) thread_.join();
    server_.reset();
  }

  int fd() const { return efd_; }

  // Every event since the last drain, as (kind, call, method, body, metadata, peer,
  // arrived_ns) tuples; metadata and peer are None unless forwarded (for authentication).
  py::list Drain() {
    std::deque<Event> events;
    {
      std::lock_guard<std::mutex> lock(events_mu_);
      events.swap(events_);
      uint64_t ignored;
      ssize_t n = read(efd_, &ignored, sizeof ignored);
      (void)n;
      signalled_ = false;
    }
    std::vector<Body> bodies;
    bodies.reserve(events.size());
    size_t total = 0;
    for (auto& e : events) {
      bodies.push_back(Allocate(e.body));
      total += bodies.back().size;
    }
    {
      // A 60 MiB request's copy, page faults included, held the event loop for 60-100 ms
      // on 2 cores; nothing else can see these bytes objects yet.
      std::optional<py::gil_scoped_release> release;
      if (total > kCopyWithoutGil) release.emplace();
      for (auto& b : bodies) b.Fill();
    }
    py::list out;
    for (size_t i = 0; i < events.size(); ++i) {
      auto& e = events[i];
      py::object metadata = py::none(), peer = py::none();
      if (e.with_metadata) {
        py::list pairs;
        for (auto& [k, v] : e.metadata) pairs.append(py::make_tuple(k, v));
        metadata = pairs;
        peer = py::str(e.peer);
      }
      out.append(py::make_tuple(e.kind, e.call, e.method, std::move(bodies[i].bytes), metadata,
                                peer, e.arrived_ns));
    }
    return out;
  }

  // Answers from Python: (kind, call, status code, body) each.  They are copied into grpc
  // buffers here, with the GIL, and written by the completion-queue thread, woken by an
  // alarm: grpc's write and finish cost about as much as decoding a request, and the Python
  // thread is the one that limits the server under load.
  void Send(const py::list& answers) {
    std::vector<Answer> batch;
    batch.reserve(answers.size());
    for (auto item : answers) {
      auto t = item.cast<py::tuple>();
      Answer a{t[0].cast<int>(), t[1].cast<uint64_t>(), t[2].cast<int>(), {}, {}};
      char* data;
      Py_ssize_t size;
      PyBytes_AsStringAndSize(t[3].ptr(), &data, &size);
      if (a.kind == ERROR) {
        a.text.assign(data, size);
      } else {
        grpc::Slice slice(data, size);
        a.body = grpc::ByteBuffer(&slice, 1);
      }
      batch.push_back(std::move(a));
    }
    py::gil_scoped_release release;
    std::shared_lock<std::shared_mutex> running(running_mu_);
    if (!running_) return;
    std::lock_guard<std::mutex> lock(answers_mu_);
    for (auto& a : batch) answers_.push_back(std::move(a));
    if (!woken_) {
      woken_ = true;
      wake_->Set(cq_.get(), gpr_inf_past(GPR_CLOCK_MONOTONIC), &wake_tag_);  // due at once
    }
  }

 private:
  static constexpr int kAcceptors = 16;

  static std::shared_ptr<grpc::ServerCredentials> Credentials(const py::dict& tls) {
    if (!tls.contains("use_ssl") || !tls["use_ssl"].cast<bool>())
      return grpc::InsecureServerCredentials();
    grpc::SslServerCredentialsOptions options(
        tls["mutual"].cast<bool>()
            ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
            : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    options.pem_root_certs = tls["root_cert"].cast<std::string>();
    options.pem_key_cert_pairs.push_back(
        {tls["server_key"].cast<std::string>(), tls["server_cert"].cast<std::string>()});
    return grpc::SslServerCredentials(options);
  }

  // A request's bytes object, allocated with the GIL and filled from grpc's slices by Fill,
  // which needs no GIL.
  struct Body {
    py::bytes bytes;
    std::vector<grpc::Slice> slices;
    size_t size = 0;

    void Fill() {
      char* p = PyBytes_AS_STRING(bytes.ptr());
      for (auto& s : slices) {
        memcpy(p, s.begin(), s.size());
        p += s.size();
      }
    }
  };

  static constexpr size_t kCopyWithoutGil = 1 << 20;

  static Body Allocate(grpc::ByteBuffer& buffer) {
    Body b;
    if (!buffer.Valid() || !buffer.Dump(&b.slices).ok()) b.slices.clear();
    for (auto& s : b.slices) b.size += s.size();
    PyObject* bytes = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(b.size));
    if (bytes == nullptr) {  // out of memory: an empty body, which its call is refused for
      PyErr_Clear();
      b.slices.clear();
      b.size = 0;
      bytes = PyBytes_FromStringAndSize(nullptr, 0);
    }
    b.bytes = py::reinterpret_steal<py::bytes>(bytes);
    return b;
  }

  std::shared_ptr<Call> Find(uint64_t id) {
    std::lock_guard<std::mutex> lock(calls_mu_);
    auto it = calls_.find(id);
    return it == calls_.end() ? nullptr : it->second;
  }

  // Start the next write, or the finish once the writes are out (call->mu held).
  void PumpLocked(Call* call) {
    if (call->writing || call->finishing) return;
    if (!call->writes.empty()) {
      call->writing = true;
      call->stream.Write(call->writes.front(), &call->tags[Call::WRITE]);
      call->writes.pop_front();
    } else if (call->finish_queued) {
      call->finishing = true;
      call->stream.Finish(call->final_status, &call->tags[Call::FINISH]);
    }
  }

  void Accept() {
    auto call = std::make_shared<Call>(this);
    call->ctx.AsyncNotifyWhenDone(&call->tags[Call::DONE]);
    {
      std::lock_guard<std::mutex> lock(calls_mu_);
      call->id = ++next_id_;
      calls_[call->id] = call;
    }
    service_.RequestCall(&call->ctx, &call->stream, cq_.get(), cq_.get(),
                         &call->tags[Call::NEW]);
  }

  void Push(Event e) {
    std::lock_guard<std::mutex> lock(events_mu_);
    events_.push_back(std::move(e));
    if (!signalled_) {
      signalled_ = true;
      uint64_t one = 1;
      ssize_t n = write(efd_, &one, sizeof one);
      (void)n;
    }
  }

  Event Make(Call* call, int kind, grpc::ByteBuffer body = {}, bool with_metadata = false) {
    Event e{kind, call->id, call->method, std::move(body), {}, {}, false, MonotonicNs()};
    if (with_metadata) {
      e.with_metadata = true;
      for (auto& [k, v] : call->ctx.client_metadata()) {
        std::string key(k.data(), k.size());
        if (key.size() > 4 && key.compare(key.size() - 4, 4, "-bin") == 0) continue;  // binary
        e.metadata.emplace_back(std::move(key), std::string(v.data(), v.size()));
      }
      e.peer = call->ctx.peer();
    }
    return e;
  }

  void FinishNow(Call* call, grpc::Status status) {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->finishing) return;
    call->finishing = true;
    call->stream.Finish(status, &call->tags[Call::FINISH]);
  }

  void Retire(Call* call) {
    if (!(call->done && call->finished)) return;
    std::lock_guard<std::mutex> lock(calls_mu_);
    calls_.erase(call->id);  // the last owner, unless Send holds it for a moment
  }

  void OnNew(Call* call, bool ok) {
    if (!ok) {  // shutting down: this call never started
      std::lock_guard<std::mutex> lock(calls_mu_);
      calls_.erase(call->id);
      return;
    }
    Accept();
    auto it = index_.find(call->ctx.method());
    if (it == index_.end()) {
      call->method = -1;
      FinishNow(call, grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                   "unknown method " + call->ctx.method()));
      return;
    }
    call->method = it->second;
    call->shape = shapes_[call->method];
    if (gated_) {
      Push(Make(call, META, {}, true));  // Python answers GO, or ERROR without reading
    } else {
      Begin(call);
    }
  }

  // Start reading the call's messages (any thread; the call's first read is not yet out).
  void Begin(Call* call) {
    if (call->shape == CLIENT_STREAMING || call->shape == BIDI) Push(Make(call, OPEN));
    call->stream.Read(&call->in, &call->tags[Call::READ]);
  }

  void OnRead(Call* call, bool ok) {
    bool streaming_in = call->shape == CLIENT_STREAMING || call->shape == BIDI;
    if (!ok) {  // the client half-closed (or went away)
      if (streaming_in) {
        Push(Make(call, END));
      } else {
        FinishNow(call, grpc::Status(grpc::StatusCode::INTERNAL, "the call carried no request"));
      }
      return;
    }
    grpc::ByteBuffer body;
    body.Swap(&call->in);
    if (streaming_in) {
      Push(Make(call, MSG, std::move(body)));
      call->stream.Read(&call->in, &call->tags[Call::READ]);
    } else if (call->shape == SERVER_STREAMING) {
      Push(Make(call, OPEN));
      Push(Make(call, MSG, std::move(body)));
      Push(Make(call, END));
    } else {
      Push(Make(call, CALL, std::move(body)));
    }
  }

  // The answers Send queued (completion-queue thread).
  void WriteAnswers() {
    std::deque<Answer> batch;
    {
      std::lock_guard<std::mutex> lock(answers_mu_);
      batch.swap(answers_);
      woken_ = false;  // the alarm fired: it may be set again
    }

    for (auto& a : batch) {
      std::shared_ptr<Call> call = Find(a.call);
      if (!call) continue;  // gone: cancelled and retired
      std::lock_guard<std::mutex> lock(call->mu);
      if (call->finishing) continue;
      switch (a.kind) {
        case GO:
          Begin(call.get());
          break;
        case REPLY:
          call->finishing = true;
          call->stream.WriteAndFinish(a.body, grpc::WriteOptions(), grpc::Status::OK,
                                      &call->tags[Call::FINISH]);
          break;
        case MSG:
          call->writes.push_back(std::move(a.body));
          PumpLocked(call.get());
          break;
        case END:
        case ERROR:
          call->final_status = a.kind == END
                                   ? grpc::Status::OK
                                   : grpc::Status(static_cast<grpc::StatusCode>(a.code), a.text);
          call->finish_queued = true;
          PumpLocked(call.get());
          break;
      }
    }
  }

  void Loop() {
    void* tag;
    bool ok;
    while (cq_->Next(&tag, &ok)) {
      if (tag == &wake_tag_) {
        WriteAnswers();
        continue;
      }
      auto* t = static_cast<Call::Tag*>(tag);
      Call* call = t->call;
      switch (t->op) {
        case Call::NEW:
          OnNew(call, ok);
          break;
        case Call::READ:
          OnRead(call, ok);
          break;
        case Call::WRITE: {
          std::lock_guard<std::mutex> lock(call->mu);
          call->writing = false;
          if (!ok) call->writes.clear();
          PumpLocked(call);
          break;
        }
        case Call::FINISH:
          call->finished = true;
          Retire(call);
          break;
        case Call::DONE:
          call->done = true;
          if (call->ctx.IsCancelled() && call->method >= 0) {
            Push(Make(call, CANCEL));
            FinishNow(call, grpc::Status::CANCELLED);
          }
          Retire(call);
          break;
      }
    }
  }

  std::vector<std::string> methods_;
  std::vector<int> shapes_;
  std::unordered_map<std::string, int> index_;
  bool gated_;
  grpc::AsyncGenericService service_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::unique_ptr<grpc::Server> server_;
  std::thread thread_;
  std::shared_mutex running_mu_;
  bool running_ = false;
  int efd_;
  std::mutex events_mu_;
  std::deque<Event> events_;
  bool signalled_ = false;
  std::mutex answers_mu_;
  std::deque<Answer> answers_;
  bool woken_ = false;
  // Created in Start: grpc++ reads GRPC_EXPERIMENTS when the first alarm is made, and must
  // read it while sonic.server.frontends.grpc_native has grpcio's setting out of the way.
  std::unique_ptr<grpc::Alarm> wake_;
  int wake_tag_ = 0;
  // its address tells the alarm from the calls' tags
  std::mutex calls_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Call>> calls_;
  uint64_t next_id_ = 0;
};

}  // namespace

PYBIND11_MODULE(_grpc_native, m) {
  m.doc() = "grpc++ byte transport for sonic's data plane (see native/grpc_transport)";
  // Debian builds abseil without NDEBUG, which leaves absl::Mutex's deadlock detection on:
  // every lock grpc core takes also updates a lock-order graph (GraphCycles), some 4% of
  // the completion-queue thread's CPU under load (perf, batch 1, concurrency 8).  A
  // release build of abseil has it off; so does this process (grpcio carries its own copy).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  m.attr("GRPC_VERSION") = grpc::Version();
  py::class_<Server>(m, "Server")
      .def(py::init<std::vector<std::string>, std::vector<int>, bool>(), py::arg("methods"),
           py::arg("shapes"), py::arg("gated"))
      .def("start", &Server::Start, py::arg("address"), py::arg("options"), py::arg("tls"))
      .def("stop", &Server::Stop, py::arg("grace_s"))
      .def("fd", &Server::fd)
      .def("drain", &Server::Drain)
      .def("send", &Server::Send);
}
