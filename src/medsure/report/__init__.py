"""Self-contained HTML report built from registered sections (outer layer: plots and HTML only here
and in each feature's ``report`` module)."""

from medsure.report.html import Report, Section, figure_to_data_uri, html_table, image_to_data_uri

__all__ = ["Report", "Section", "html_table", "figure_to_data_uri", "image_to_data_uri"]
