"""The training loops: the continual loop (class-incremental, FSCIL) and its run state."""
