"""Train toolkens: the typed recipe (``config``), reading training files (``convert``), the
frozen pass and its feature cache (``features``), the run's setup (``pipeline``), the exact loss
(``loss``), the loop (``trainer``) and bias calibration (``calibrate``)."""
