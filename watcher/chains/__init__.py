"""One follower per chain family."""
