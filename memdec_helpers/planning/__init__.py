"""The plan of a run before any work: every stage's estimated time, memory and disk
(`plan`), from device specs (`devices`), model shapes (`shapes`) and rates (`costs`); and the
`auto` profile choice (`auto`), which picks the profile whose plan fits this machine."""
