"""For the learner: exercises (checks; solutions apart in `solutions`), figures (`plots`), the
plain loss and loop lesson 03 shows (`plain_training`), the notebook's own checks (`notebook`)
and where the course is published (`publish`)."""
