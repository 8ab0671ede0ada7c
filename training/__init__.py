"""Training side: data ingestion, splits, evaluation, recommenders with ProEx fusion, export."""
