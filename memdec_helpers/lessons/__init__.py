"""For the learner: exercises (checks, hints on request; solutions apart in `solutions`) and
"predict, then run" questions (`predictions`), figures (`plots`), the plain loss and loop lesson
03 shows (`plain_training`), the notebook's own checks (`notebook`) and where the course is
published (`publish`)."""
