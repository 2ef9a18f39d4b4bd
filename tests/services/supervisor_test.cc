// The local process supervisor with /bin/sh children: a dying process is
// restarted with back-off, the primary's clean exit ends the run and stops the
// rest, a process that keeps dying ends it with 1, an interrupt with 130.
#include "interlace/rl/supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "nlohmann/json.hpp"

namespace interlace::rl {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::vector<std::string> sh(const std::string& script) { return {"/bin/sh", "-c", script}; }

SupervisorOptions options(int max_restarts, std::string pids_file = "", std::function<bool()> interrupted = {}) {
  SupervisorOptions o;
  o.primary = "primary";
  o.max_restarts = max_restarts;
  o.pids_file = std::move(pids_file);
  o.interrupted = std::move(interrupted);
  return o;
}

class Supervisor : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("interlace-supervisor-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST(RestartDelay, BacksOffWhileAProcessKeepsDying) {
  auto s = [](int q) { return std::chrono::duration_cast<std::chrono::seconds>(restart_delay(q)).count(); };
  EXPECT_EQ(s(0), 0);
  EXPECT_EQ(s(1), 0);
  EXPECT_EQ(s(2), 1);
  EXPECT_EQ(s(3), 2);
  EXPECT_EQ(s(4), 4);
  EXPECT_EQ(s(7), 32);
  EXPECT_EQ(s(50), 32);
}

TEST_F(Supervisor, RestartsADeadProcessAndStopsTheRestWhenThePrimaryIsDone) {
  // The helper dies at its first start (leaving a mark) and then runs until stopped.
  const std::string mark = path("died-once"), alive = path("helper-pid");
  const std::string helper = "if [ ! -e " + mark + " ]; then touch " + mark + "; exit 3; fi; echo $$ > " + alive +
                             "; exec sleep 60";
  const std::string primary = "while [ ! -e " + alive + " ]; do sleep 0.05; done; exit 0";
  const auto t0 = Clock::now();
  const int rc = supervise({{"primary", sh(primary)}, {"helper", sh(helper)}},
                           options(3, path("pids.json")));
  EXPECT_EQ(rc, 0);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(20));
  EXPECT_TRUE(fs::exists(mark));
  std::ifstream in(alive);
  pid_t helper_pid = 0;
  in >> helper_pid;
  ASSERT_GT(helper_pid, 0);
  EXPECT_NE(kill(helper_pid, 0), 0) << "the helper was left running";
  const nlohmann::json pids = nlohmann::json::parse(std::ifstream(path("pids.json")));
  EXPECT_TRUE(pids.contains("primary") && pids.contains("helper")) << pids;
}

TEST_F(Supervisor, GivesUpOnAProcessThatKeepsDying) {
  const auto t0 = Clock::now();
  const int rc = supervise({{"primary", sh("exit 7")}}, options(2));
  EXPECT_EQ(rc, 1);
  // Restarts at once, then after 1 s: the back-off is there, and bounded.
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_GE(took, 0.9);
  EXPECT_LT(took, 10);
}

TEST_F(Supervisor, AnInterruptStopsEverything) {
  const std::string started = path("started");
  const int rc = supervise({{"primary", sh("touch " + started + "; exec sleep 60")}},
                           options(10, "", [&] { return fs::exists(started); }));
  EXPECT_EQ(rc, 130);
}

TEST(RunProcess, ReturnsTheExitCodeOrWhyNot) {
  EXPECT_EQ(run_process(sh("exit 5")), 5);
  EXPECT_EQ(run_process(sh("kill -9 $$")), 128 + 9);
  EXPECT_EQ(run_process({"/nonexistent/program"}), 127);
}

}  // namespace
}  // namespace interlace::rl
