/* CPU library only: run `work(i)` for i in [0, workers) on the calling thread (i = 0) and
 * workers - 1 new threads, and wait for all of them. If the system has no more threads to
 * give, the calling thread also does the work of the workers that could not start, so every
 * i runs exactly once. `work` must not throw. */
#ifndef GROUNDRT_CPU_WORKERS_H
#define GROUNDRT_CPU_WORKERS_H

#include <system_error>
#include <thread>
#include <vector>

namespace groundrt {

template <typename Work>
void run_workers(int workers, Work&& work) {
  std::vector<std::thread> pool;
  int started = 1;
  try {
    for (; started < workers; ++started) pool.emplace_back(work, started);
  } catch (const std::system_error&) {
    // no more threads: the rest run here
  }
  work(0);
  for (int i = started; i < workers; ++i) work(i);
  for (std::thread& thread : pool) thread.join();
}

}  // namespace groundrt

#endif /* GROUNDRT_CPU_WORKERS_H */
