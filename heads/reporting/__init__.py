"""What people read: figures (``plots``), markdown/CSV tables and the files of an evaluation (``tables``), the HTML report (``report``) and predict's HTML page (``prediction_report``)."""
