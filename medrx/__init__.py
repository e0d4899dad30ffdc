"""The medication-recommendation task: EHR readers, vocabulary, model, metrics, training."""
