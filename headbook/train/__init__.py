"Shared training infrastructure: config presets, run folders, metrics, checkpoint/resume, torchrun/DDP."
from headbook.train.config import (parse_overrides, apply_overrides, make_config, config_to_dict, config_from_dict,
                                   save_config)
from headbook.train.loop import (new_run_dir, seed_everything, MetricsLog, read_metrics, save_checkpoint,
                                 load_checkpoint, latest_checkpoint, checkpoint_path, rng_state, set_rng_state,
                                 unwrap, DistInfo, setup_distributed, cleanup_distributed, barrier, wrap_model,
                                 all_reduce_mean, global_batch_indices, shard, TrainResult, train, start_run,
                                 record_config, read_checkpoint)
