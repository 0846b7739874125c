"""`python -m lottery_tf.export_benchmark`: latency per runtime, dense vs tickets.

The benchmark lives in `lottery_tf.bench.runtime_bench`; docs/EXPORT.md shows its tables.
"""

from lottery_tf.bench.runtime_bench import RuntimeBenchmarkCommand
from lottery_tf.cli import app

if __name__ == "__main__":
    app.main(RuntimeBenchmarkCommand())
