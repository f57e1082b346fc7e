"""What the project writes for people to read, and every figure.

artefacts: a run's folder (metrics.json, figures); predictions: predictions.csv and test_predictions.csv, and what
predict.py's evaluation writes; runs -> compare -> tables: the SR study's comparison of a sweep; crossdata: the
cross-dataset report; plots: every figure (matplotlib). The statistics are wbc.stats.
"""
