from lottery_tf.cli import run

run()
