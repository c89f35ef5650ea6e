"""Running things: worker processes, distributed training, servers, atomic files."""
