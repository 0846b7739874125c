from lottery_tf.cli.train import run

run()
